"""`netlab trace` tells one story per user connection, judged on what the kernel, the
apps and tshark saw, through the real CLI (issue 15, items 3 and 10).

(a) `--pcap` of a successful cross-node ambient call reports no drop: the capture itself
    (a promiscuous fabric bridge) must not put OTHERHOST drops on the flows;
(b) conntrack and nftrace events stand in order with the packets: the REDIRECT before the
    SYN it rewrote, netlab's own TRACE rule nowhere;
(c) one story with named legs whose flows are the ones curl and the echo app saw;
(d) a STRICT-denied call names the policy, and its one RST is counted once;
(e) with `--pcap`, Debian's tshark decrypts HBONE with the key log: the CONNECT's
    :authority is the app's address.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from netlab import topology
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.kernel

AMBIENT = REPO / "topologies" / "ambient-bookinfo.yaml"
STRICT = Path(__file__).parent / "topologies" / "strict-policies.yaml"  # given with AMBIENT
STATIC_STRICT = "istio-system/istio_converted_static_strict"  # istiod's name for STRICT


def _status(lab: str) -> dict[str, Any]:
    return json.loads(run_cli("status", lab, "--json", check=True).stdout)


def _cross_node(lab: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    st = _status(lab)
    pods = {f"{p['namespace']}/{p['name']}": p for p in st["pods"]}
    sleep = pods["bookinfo/sleep-0"]
    ratings = next(p for n, p in pods.items()
                   if n.startswith("bookinfo/ratings-") and p["node"] != sleep["node"])
    return sleep, ratings, {n["name"]: n for n in st["nodes"]}


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _of(lines: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [x[key] for x in lines if key in x]


def _events(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in lines if "source" in x and "kind" in x]


def test_pcap_trace_of_a_cross_node_call_reports_no_drop(up_lab: Callable[..., str],
                                                          tmp_path: Path) -> None:
    lab = up_lab(AMBIENT)
    sleep, ratings, _ = _cross_node(lab)
    pcap = tmp_path / "pcap"
    res = run_cli("trace", lab, "--pod", "bookinfo/sleep", "--pcap", str(pcap), "--json", "--",
                  "curl", "-s", "-m", "5", f"http://{ratings['ip']}:9080/", timeout=60)
    lines = _lines(res.stdout)
    assert _of(lines, "command")[0]["exit_code"] == 0, res.stderr
    # The fabric bridge was captured, and the HBONE SYN crossed it (tshark's reading).
    fabric = f"nl-{lab}-fabric"
    assert (pcap / f"{fabric}__br0.pcapng").exists()
    syns = subprocess.run(["tshark", "-r", str(pcap / f"{ratings['netns']}__eth0.pcapng"), "-Y",
                           "tcp.dstport==15008 && tcp.flags.syn==1 && tcp.flags.ack==0"],
                          capture_output=True, text=True, check=True).stdout
    assert syns.strip(), "no HBONE SYN in the destination pod's capture"
    timelines = _of(lines, "timeline")
    assert timelines and all(t["first_drop"] is None for t in timelines), \
        [t["first_drop"] for t in timelines if t["first_drop"]]
    assert all(not s["drops"] for s in _of(lines, "story"))
    # No device was put in promiscuous mode to take the capture.
    assert not [e for e in _events(lines) if e["kind"] == "drop" and e.get("reason") == "OTHERHOST"]


def test_conntrack_and_nftrace_in_order_with_the_packets(up_lab: Callable[..., str]) -> None:
    lab = up_lab(AMBIENT)
    sleep, ratings, _ = _cross_node(lab)
    res = run_cli("trace", lab, "--pod", "bookinfo/sleep", "--json", "--", "curl", "-s", "-m", "5",
                  "-o", "/dev/null", "-w", "\\n%{local_port}\\n", f"http://{ratings['ip']}:9080/",
                  timeout=60)
    lines = _lines(res.stdout)
    assert _of(lines, "command")[0]["exit_code"] == 0, res.stderr
    # With --json, curl's stdout (its local port) goes to stderr.
    port = int(next(x for x in res.stderr.splitlines() if x.strip().isdigit()))
    evs = _events(lines)
    here = [e for e in evs if e.get("netns") == sleep["netns"] and e.get("sport") == port]
    syn = next(e for e in here if e["source"] == "bpf" and e["kind"] == "tx"
               and e.get("ifname") == "lo" and e.get("tcp_flags") == "S")
    redirect = next(e for e in here if e["source"] == "nftrace"
                    and "REDIRECT --to-ports 15001" in e["extra"].get("rule", "")
                    and e.get("tcp_flags") == "S")
    ct = next(e for e in here if e["source"] == "conntrack" and e["kind"] == "ct_new"
              and e["extra"]["reply"].get("sport") == 15001)
    synack = next(e for e in evs if e["source"] == "bpf" and e.get("netns") == sleep["netns"]
                  and e.get("dport") == port and e.get("tcp_flags") == "SA")
    assert redirect["ts_ns"] < syn["ts_ns"] < synack["ts_ns"], (redirect, syn)
    assert ct["ts_ns"] < syn["ts_ns"], (ct, syn)
    # The JSON lines are in that order too.
    assert evs.index(redirect) < evs.index(syn) and evs.index(ct) < evs.index(syn)
    assert not [e for e in evs if "netlab-trace-" in json.dumps(e)]


def test_one_story_with_named_legs(up_lab: Callable[..., str]) -> None:
    lab = up_lab(AMBIENT)
    sleep, ratings, nodes = _cross_node(lab)
    res = run_cli("trace", lab, "--pod", "bookinfo/sleep", "--json", "--", "curl", "-s", "-m", "5",
                  "-w", "\\n%{local_port}\\n", f"http://{ratings['ip']}:9080/", timeout=60)
    lines = _lines(res.stdout)
    assert _of(lines, "command")[0]["exit_code"] == 0, res.stderr
    body_line = next(x for x in res.stderr.splitlines() if x.startswith("{"))
    app_port = int(next(x for x in res.stderr.splitlines() if x.strip().isdigit()))
    seen = json.loads(body_line)  # the echo app's own view of the connection it got
    stories = [s for s in _of(lines, "story") if s["pod"] == "bookinfo/sleep-0"]
    assert len(stories) == 1, [s["title"] for s in stories]
    s = stories[0]
    legs = {leg["name"]: leg for leg in s["legs"]}
    assert list(legs) == ["app → ztunnel :15001",
                          f"HBONE {sleep['node']} → {ratings['node']} :15008", "ztunnel → app"]
    assert legs["app → ztunnel :15001"]["client"]["sport"] == app_port  # curl's port
    up = legs["ztunnel → app"]["client"]
    assert f"{up['saddr']}:{up['sport']}" == seen["peer"]  # the connection the app accepted
    hb = legs[f"HBONE {sleep['node']} → {ratings['node']} :15008"]["client"]
    assert (hb["saddr"], hb["daddr"], hb["dport"]) == (sleep["ip"], ratings["ip"], 15008)
    assert s["outcome"] == "completed"
    assert sorted(d["proxy"] for d in s["decisions"]) == sorted(
        [f"ztunnel/{sleep['node']}", f"ztunnel/{ratings['node']}"])


def test_strict_denied_call_names_the_policy(build_lab: Callable[..., str]) -> None:
    lab = build_lab(topology.load([AMBIENT, STRICT]))
    _, ratings, _ = _cross_node(lab)
    url = f"http://{ratings['ip']}:9080/"
    res = run_cli("trace", lab, "--pod", "outside/sleep", "--json", "--", "curl", "-s", "-m", "3",
                  url, timeout=60)
    lines = _lines(res.stdout)
    assert _of(lines, "command")[0]["exit_code"] != 0, "plaintext to a STRICT pod went through"
    story = next(s for s in _of(lines, "story") if s["pod"] == "outside/sleep-0")
    denied = [d for d in story["decisions"] if d["denied"]]
    assert [d["policy"] for d in denied] == [STATIC_STRICT], story["decisions"]
    assert STATIC_STRICT in story["outcome"]
    # One RST, seen at several hops: counted once, with the kernel's R segments as its hops.
    rst_packets = [e for e in _events(lines) if e["source"] == "bpf" and e["kind"] in ("tx", "rx")
                   and "R" in (e.get("tcp_flags") or "") and e.get("dport") == story["client"]["sport"]]
    assert len(rst_packets) >= 4
    # Usually one RST; a second, different segment appears when curl's request arrives after
    # ztunnel aborted (the kernel answers it with its own RST). Each segment is counted once.
    segments = {(e.get("seq"), e["tcp_flags"]) for e in rst_packets}
    assert len(story["resets"]) == len(segments), (story["resets"], segments)
    assert all(len(r["hops"]) >= 2 for r in story["resets"]), story["resets"]
    # Every RST packet the kernel saw is a hop of exactly one counted reset.
    assert sum(1 for r in story["resets"] for h in r["hops"] if h["kind"] in ("tx", "rx")) == len(rst_packets)
    text = run_cli("trace", lab, "--pod", "outside/sleep", "--", "curl", "-s", "-m", "3", url,
                   timeout=60).stdout
    assert f"denied by policy {STATIC_STRICT}" in text, text


def test_pcap_key_log_lets_tshark_read_the_hbone_connect(up_lab: Callable[..., str],
                                                         tmp_path: Path) -> None:
    lab = up_lab(AMBIENT)
    sleep, ratings, _ = _cross_node(lab)
    pcap = tmp_path / "pcap"
    res = run_cli("trace", lab, "--pod", "bookinfo/sleep", "--pcap", str(pcap), "--", "curl", "-s",
                  "-m", "5", "-o", "/dev/null", f"http://{ratings['ip']}:9080/", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "no drops seen" in res.stdout and "FIRST DROP" not in res.stdout, res.stdout
    keylog = pcap / "tls-keys.log"
    assert f"tls.keylog_file:{keylog}" in res.stdout, res.stdout
    capture = pcap / f"{sleep['netns']}__eth0.pcapng"
    read = ["tshark", "-r", str(capture), "-d", "tcp.port==15008,tls", "-Y",
            'http2.headers.method == "CONNECT"', "-T", "fields", "-e", "http2.headers.authority"]
    without = subprocess.run(read, capture_output=True, text=True, check=True).stdout.split()
    assert without == [], "CONNECT readable without the key log?"
    got = subprocess.run(read[:3] + ["-o", f"tls.keylog_file:{keylog}"] + read[3:],
                         capture_output=True, text=True, check=True).stdout.split()
    assert got == [f"{ratings['ip']}:9080"], got
    assert not (Path("/run/netlab") / lab / "tls-keylog").exists()  # switched off again
