"""`netlab trace` and `netlab doctor` through the real CLI, judged on the events the
kernel produced (JSON lines), never on the tracer's own summary.

(a) a closed port: the SYN must be seen dropped with NO_SOCKET in the server pod's
    netns, and curl must have failed;
(b) ambient (Istio 1.24+): the app's SYN redirected to ztunnel's 15001 (conntrack
    reply tuple in the client pod netns) and an HBONE connection to 15008 crossing
    from node-1 to node-2 (bpf events on both nodes);
(c) doctor says every collector can run here.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.kernel

BOOKINFO = REPO / "topologies" / "bookinfo.yaml"
AMBIENT = REPO / "topologies" / "ambient-bookinfo.yaml"


def _pods(lab: str) -> dict[str, dict[str, Any]]:
    status = json.loads(run_cli("status", lab, "--json", check=True).stdout)
    return {f"{p['namespace']}/{p['name']}": p for p in status["pods"]}


def _nodes(lab: str) -> dict[str, dict[str, Any]]:
    status = json.loads(run_cli("status", lab, "--json", check=True).stdout)
    return {n["name"]: n for n in status["nodes"]}


def _lines(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line must be JSON (the --json contract), or this raises."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _events(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in lines if "source" in x and "kind" in x]


def _command(lines: list[dict[str, Any]]) -> dict[str, Any]:
    cmds = [x["command"] for x in lines if "command" in x]
    assert len(cmds) == 1, lines[-3:]
    return cmds[0]


def test_trace_closed_port_drop_no_socket(up_lab: Callable[..., str]) -> None:
    lab = up_lab(BOOKINFO)
    pods = _pods(lab)
    ratings = pods["bookinfo/ratings-0"]
    assert ratings["node"] != pods["bookinfo/sleep-0"]["node"]  # crosses the fabric
    res = run_cli("trace", lab, "--pod", "sleep", "--port", "9999", "--json", "--",
                  "curl", "-m", "2", f"http://{ratings['ip']}:9999/", timeout=30)
    lines = _lines(res.stdout)
    cmd = _command(lines)
    assert cmd["exit_code"] != 0 and res.returncode == cmd["exit_code"], res.stderr
    drops = [e for e in _events(lines) if e["source"] == "bpf" and e["kind"] == "drop"
             and e.get("reason") == "NO_SOCKET" and e.get("netns") == ratings["netns"]]
    assert drops, f"no NO_SOCKET drop in {ratings['netns']}: {res.stderr}"
    assert all(d["dport"] == 9999 and d["daddr"] == ratings["ip"] for d in drops)
    assert drops[0]["tcp_flags"] == "S"
    timelines = [x["timeline"] for x in lines if "timeline" in x]
    assert any((t["first_drop"] or {}).get("reason") == "NO_SOCKET" for t in timelines)
    counters = next(x for x in lines if "counters" in x)["counters"]
    assert counters["bpf"]["lost"] == 0


def test_trace_ambient_redirect_and_hbone(up_lab: Callable[..., str]) -> None:
    lab = up_lab(AMBIENT)
    pods, nodes = _pods(lab), _nodes(lab)
    sleep = pods["bookinfo/sleep-0"]
    ratings = next(p for n, p in pods.items()
                   if n.startswith("bookinfo/ratings-") and p["node"] != sleep["node"])
    res = run_cli("trace", lab, "--pod", "bookinfo/sleep", "--json", "--",
                  "curl", "-s", "-m", "5", f"http://{ratings['ip']}:9080/", timeout=30)
    lines = _lines(res.stdout)
    assert _command(lines)["exit_code"] == 0, res.stderr
    evs = _events(lines)
    # REDIRECT inside the client pod: conntrack's reply tuple comes from 15001.
    redirected = [e for e in evs if e["source"] == "conntrack"
                  and e.get("netns") == sleep["netns"] and e.get("dport") == 9080
                  and e.get("daddr") == ratings["ip"]
                  and (e.get("extra") or {}).get("reply", {}).get("sport") == 15001]
    assert redirected, f"no conntrack event with reply sport 15001 in {sleep['netns']}"
    # HBONE: TCP to ratings:15008 seen leaving node-1 and arriving on node-2.
    hbone = [e for e in evs if e["source"] == "bpf" and e.get("dport") == 15008
             and e.get("daddr") == ratings["ip"] and e.get("proto") == "tcp"]
    src_node, dst_node = nodes[sleep["node"]]["netns"], nodes[ratings["node"]]["netns"]
    seen = {(e.get("netns"), e.get("ifname"), e["kind"]) for e in hbone}
    assert (src_node, "eth0", "tx") in seen and (dst_node, "eth0", "rx") in seen, seen
    # and nothing of the app's port 9080 crossed the fabric in plaintext.
    assert not [e for e in evs if e["source"] == "bpf" and e.get("netns") in (src_node, dst_node)
                and e.get("ifname") == "eth0" and 9080 in (e.get("dport"), e.get("sport"))]


def test_doctor_all_ok() -> None:
    res = run_cli("doctor", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("bpf", "conntrack", "nftrace"):
        assert name in res.stdout
    rows = {r["check"]: r for r in json.loads(run_cli("doctor", "--json", timeout=60).stdout)}
    for name in ("bpf", "conntrack", "nftrace", "root", "bcc import", "kernel headers",
                 "tracefs", "iptables backend", "conntrack module"):
        assert rows[name]["ok"], rows[name]
