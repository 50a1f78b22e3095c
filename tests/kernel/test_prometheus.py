"""A real Prometheus in a lab (spec.prometheus.enabled), judged on what real clients see.

Evidence: Debian's Prometheus (its targets and series), promtool on each ztunnel scrape,
curl through `netlab port-forward` and the host netns before and after, the Kiali graph
JSON built from Prometheus' answers, and a headless Chromium screenshot of the graph page.
The expected series are the documented real behaviour (mesh-facts §8, mesh-facts-2 §A4:
docs/policy-telemetry.md), with `app="ztunnel"` coming from the relabelling, not ztunnel.
Waits are on series appearing (`wait_for_series`), never sleeps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

from netlab import topology
from netlab.kernel import lifecycle, query
from netlab.model import PrometheusSpec
from netlab.telemetry.promclient import Prometheus, wait_for_series
from tests.conftest import REPO, NETLAB, run_cli
from tests.kernel import hoststate
from tests.kernel.screenshots import CHROMIUM, png_rows

pytestmark = pytest.mark.kernel

TOPO = REPO / "topologies" / "ambient-bookinfo.yaml"
TD = "spiffe://cluster.local/ns"
WAIT = 30.0  # seconds for a series to appear: a deadline, not a duration of the test


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, Any]]:
    name = f"tp{os.getpid() % 1000}"
    try:
        lifecycle.up(replace(topology.load([TOPO]), name=name, prometheus=PrometheusSpec(True, "1s")))
        status = query.status(query.record_of(name))
        yield {"name": name, "pods": {f"{p['namespace']}/{p['name']}": p for p in status["pods"]},
               "nodes": {n["name"]: n for n in status["nodes"]}, "prom": Prometheus.of_lab(name)}
    finally:
        if os.path.isdir(f"/run/netlab/{name}"):
            lifecycle.down(name)


def curl(lab: dict[str, Any], pod: str, url: str) -> None:
    res = run_cli("exec", lab["name"], pod, "--", "curl", "-sS", "-m", "5", url, timeout=30)
    assert res.returncode == 0, f"curl {url} from {pod}: {res.stderr}"


def traffic(lab: dict[str, Any]) -> None:
    """The three cases of §8: HBONE by Service name, plaintext in, passthrough out."""
    p = lab["pods"]
    curl(lab, "bookinfo/sleep-0", "http://ratings.bookinfo:9080/")
    curl(lab, "outside/sleep-0", f"http://{p['bookinfo/ratings-0']['ip']}:9080/")
    curl(lab, "bookinfo/sleep-0", f"http://{p['outside/echo-0']['ip']}:8080/")


def selector(**labels: str) -> str:
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


def test_prometheus_scrapes_both_ztunnels(lab: dict[str, Any]) -> None:
    up = wait_for_series(lab["prom"], 'up{app="ztunnel"} == 1', WAIT, min_series=2)
    assert sorted(r["metric"]["instance"] for r in up) == sorted(f"{n['ip']}:15020" for n in lab["nodes"].values())
    # the pod metadata the relabelling turned into labels, as in a cluster
    assert {(r["metric"]["namespace"], r["metric"]["job"]) for r in up} == {("istio-system", "kubernetes-pods")}
    assert sorted(r["metric"]["pod"] for r in up) == sorted(f"ztunnel-{n}" for n in lab["nodes"])
    healthy = [t for t in lab["prom"].targets() if t["health"] == "up"]
    assert len(healthy) == 2, lab["prom"].targets()


def _scrape(netns: str) -> tuple[str, bytes]:
    """GET :15020/metrics inside a node netns with curl: (Content-Type, body)."""
    res = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "curl", "-sS", "-m", "5", "-D", "-",
                          "http://127.0.0.1:15020/metrics"], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    head, _, body = res.stdout.partition(b"\r\n\r\n")
    ctype = re.search(rb"(?im)^content-type:\s*(.+?)\s*$", head)
    assert ctype, head
    return ctype.group(1).decode(), body


def test_every_ztunnel_scrape_passes_promtool(lab: dict[str, Any]) -> None:
    """The scrape is ztunnel's OpenMetrics: promtool parses it (its only remarks are the
    text-format `_total ... no help text` ones real ztunnel gets too), Prometheus ingests it,
    and it carries no `app` label of its own."""
    traffic(lab)
    wait_for_series(lab["prom"], "istio_tcp_connections_opened_total", WAIT, min_series=4)
    for node in lab["nodes"].values():
        ctype, body = _scrape(node["netns"])
        assert ctype == "application/openmetrics-text;charset=utf-8;version=1.0.0"
        assert body.rstrip().endswith(b"# EOF") and b"istio_tcp_connections_opened_total{" in body
        assert not re.search(rb'[{,]app="', body)  # source_app etc. are ztunnel's; app is not
        res = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
        problems = [line for line in res.stderr.decode().splitlines() if line.strip()]
        assert res.returncode in (0, 3), res.stderr
        assert all(re.fullmatch(r"istio_tcp_\w+_total no help text", p) for p in problems), problems
    scraped = lab["prom"].query('scrape_samples_scraped{app="ztunnel"} > 0')
    assert len(scraped) == 2, scraped


def test_series_of_each_case_hold(lab: dict[str, Any]) -> None:
    """§8/§A4 in the lab's Prometheus, one series per case, `app="ztunnel"` on each."""
    traffic(lab)
    cases = {
        "hbone source": dict(reporter="source", connection_security_policy="mutual_tls",
                             source_workload="sleep", destination_workload="ratings",
                             destination_service="ratings.bookinfo.svc.cluster.local",
                             source_principal=f"{TD}/bookinfo/sa/sleep",
                             destination_principal=f"{TD}/bookinfo/sa/bookinfo-ratings"),
        "hbone destination": dict(reporter="destination", connection_security_policy="mutual_tls",
                                  source_workload="sleep", destination_workload="ratings",
                                  destination_service="ratings.bookinfo.svc.cluster.local",
                                  source_principal=f"{TD}/bookinfo/sa/sleep",
                                  destination_principal=f"{TD}/bookinfo/sa/bookinfo-ratings"),
        "plaintext in": dict(reporter="destination", connection_security_policy="unknown",
                             source_workload_namespace="outside", destination_workload="ratings",
                             source_principal="unknown",
                             destination_principal=f"{TD}/bookinfo/sa/bookinfo-ratings"),
        "passthrough": dict(reporter="source", connection_security_policy="unknown",
                            destination_workload="echo", destination_workload_namespace="outside",
                            source_principal="unknown", destination_principal=f"{TD}/outside/sa/default"),
    }
    for case, labels in cases.items():
        got = wait_for_series(lab["prom"], f'istio_tcp_connections_opened_total{{{selector(**labels)}}}', WAIT)
        assert all(r["metric"]["app"] == "ztunnel" for r in got), (case, got)
        assert all(r["metric"]["response_flags"] == "-" for r in got), (case, got)
    for metric in ("istio_tcp_connections_closed_total", "istio_tcp_sent_bytes_total",
                   "istio_tcp_received_bytes_total"):
        wait_for_series(lab["prom"], f'{metric}{{connection_security_policy="mutual_tls"}} > 0', WAIT)


def test_netlab_promql_answers(lab: dict[str, Any]) -> None:
    traffic(lab)
    q = 'istio_tcp_connections_opened_total{reporter="source",connection_security_policy="mutual_tls"}'
    wait_for_series(lab["prom"], q, WAIT)
    res = run_cli("promql", lab["name"], q, "--json", check=True)
    series = json.loads(res.stdout)
    assert series and all(s["metric"]["app"] == "ztunnel" and float(s["value"][1]) >= 1 for s in series)
    ranged = json.loads(run_cli("promql", lab["name"], q, "--range", "1m", "--json", check=True).stdout)
    assert ranged and all(s["values"] for s in ranged)
    plain = run_cli("promql", lab["name"], q, check=True).stdout
    assert 'reporter="source"' in plain and 'app="ztunnel"' in plain
    bad = run_cli("promql", lab["name"], "sum(")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "refused" in bad.stderr


def test_port_forward_serves_ready_on_loopback_and_leaves_nothing(lab: dict[str, Any]) -> None:
    before = hoststate.snapshot()
    proc = subprocess.Popen([NETLAB, "port-forward", lab["name"], "prometheus", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket listens
        m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 9090", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        port = int(m.group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=10) as r:
            assert r.status == 200 and b"Ready" in r.read()
        ss = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert [line.split()[3] for line in ss.splitlines()] == [f"127.0.0.1:{port}"], ss
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    assert proc.returncode in (0, 130), proc.stderr.read()  # type: ignore[union-attr]
    ss = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert ss.strip() == "", ss
    assert hoststate.snapshot() == before


def _graph(lab: dict[str, Any], *args: str) -> dict[str, Any]:
    return json.loads(run_cli("graph", lab["name"], "-o", "json", *args, check=True).stdout)


def _edges(graph: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    nodes = {n["data"]["id"]: n["data"] for n in graph["elements"]["nodes"]}

    def name(n: dict[str, Any]) -> str:
        kind = "svc" if n["nodeType"] == "service" else "wl"
        return f"{kind}:{n['namespace']}/{n.get('workload') or n.get('service')}"

    return {(name(nodes[e["data"]["source"]]), name(nodes[e["data"]["target"]])): e["data"]
            for e in graph["elements"]["edges"]}


@pytest.fixture(scope="module")
def rated(lab: dict[str, Any]) -> dict[str, Any]:
    """Traffic Prometheus has seen *increase*: Kiali's `rate(...) > 0` needs two samples
    apart, and a series is born at its first connection. Two waves, each awaited."""
    traffic(lab)
    wait_for_series(lab["prom"], 'istio_tcp_connections_opened_total{reporter="destination"}', WAIT, 2)
    traffic(lab)
    for who in ('reporter="source",destination_workload="ratings"', 'reporter="destination",'
                'source_workload_namespace="outside"', 'reporter="source",destination_workload="echo"'):
        wait_for_series(lab["prom"], f"rate(istio_tcp_received_bytes_total{{{who}}}[10m]) > 0", WAIT)
    return lab


def test_graph_json_has_the_expected_edges(rated: dict[str, Any]) -> None:
    """Kiali 2.1 with Security on. sleep → ratings goes through the injected service node
    (ztunnel reports the Service), fully mTLS on the client's leg. The service → workload
    leg also carries outside/sleep's plaintext (ztunnel guesses the Service of a
    plaintext-in connection too), so its isMTLS is Kiali's mtls/(mtls+other) share, strictly
    between 0 and 100. The plaintext and passthrough edges carry no isMTLS."""
    edges = _edges(_graph(rated, "--kiali", "2.1", "--security"))
    hbone = edges[("wl:bookinfo/sleep", "svc:bookinfo/ratings")]
    assert hbone["isMTLS"] == "100" and float(hbone["traffic"]["rates"]["tcp"]) > 0
    assert 0 < float(edges[("svc:bookinfo/ratings", "wl:bookinfo/ratings")]["isMTLS"]) < 100
    plain = edges[("wl:outside/sleep", "svc:bookinfo/ratings")]
    assert "isMTLS" not in plain and float(plain["traffic"]["rates"]["tcp"]) > 0
    passthrough = edges[("wl:bookinfo/sleep", "wl:outside/echo")]
    assert "isMTLS" not in passthrough and float(passthrough["traffic"]["rates"]["tcp"]) > 0
    assert all(e["traffic"]["protocol"] == "tcp" for e in edges.values())
    no_security = _edges(_graph(rated, "--kiali", "2.1"))
    assert set(no_security) == set(edges) and not any("isMTLS" in e for e in no_security.values())


def test_edge_panel_charts(rated: dict[str, Any]) -> None:
    """Kiali 2.0's edge panel for the workload edge bookinfo/sleep → ratings (service nodes
    off, as the panel is modelled for workload destinations): the source-reported TCP range
    queries of mesh-facts-2 §B, with points, since the client's ztunnel reports this leg."""
    res = run_cli("graph", rated["name"], "--edge", "bookinfo/sleep", "ratings", "--metrics", "--kiali", "2.0",
                  "--no-service-nodes", check=True)
    assert "tcp_sent reporter=source" in res.stdout
    assert 'sum(rate(istio_tcp_received_bytes_total{reporter="source",destination_workload_namespace="bookinfo",' \
           'destination_workload="ratings",destination_cluster="Kubernetes"}[30s])) by (source_workload)' in res.stdout
    assert "Not enough traffic" not in res.stdout.split("tcp_received")[0], res.stdout


def longest_run(rows: list[list[tuple[int, int, int]]], colour: tuple[int, int, int]) -> int:
    """The longest horizontal run of exactly `colour`: a filled shape, not antialiased text."""
    best = 0
    for row in rows:
        run = 0
        for px in row:
            run = run + 1 if px == colour else 0
            best = max(best, run)
    return best


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no /usr/bin/chromium")
def test_graph_html_in_headless_chromium(rated: dict[str, Any], tmp_path: Path) -> None:
    """The page Chromium draws has the graph: Kiali's node border blue (#2b9af3), the edge
    green (#3e8635), and the padlock of an mTLS edge, a filled 9 px wide #151515 body that
    no text on the page has (a run of at least 7 pixels of exactly that colour)."""
    page = tmp_path / "graph.html"
    run_cli("graph", rated["name"], "--kiali", "2.1", "--security", "-o", "html", "--out", str(page), check=True)
    text = page.read_text()
    assert "<svg" in text and 'class="lock"' in text
    png = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
                    "--window-size=1200,900", f"file://{page}"], capture_output=True, timeout=90)
    assert png.exists()
    rows = png_rows(png)
    pixels = {px for row in rows for px in row}
    assert (0x2b, 0x9a, 0xf3) in pixels and (0x3e, 0x86, 0x35) in pixels
    assert longest_run(rows, (0x15, 0x15, 0x15)) >= 7
    keep = os.environ.get("NETLAB_KEEP_SCREENSHOT")
    if keep:
        import shutil

        shutil.copy(png, keep)
