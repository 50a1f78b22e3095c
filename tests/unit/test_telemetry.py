"""ztunnel telemetry: labels per reporter (§8), exposition format, and a real Prometheus scrape."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from netlab.dataplane.telemetry import LABELS, ConnRecord, ZtunnelTelemetry
from netlab.snapshot import Workload
from tests.conftest import stop_process

PROMETHEUS = "/usr/bin/prometheus"
NAMES = {"istio_tcp_connections_opened", "istio_tcp_connections_closed",
         "istio_tcp_sent_bytes", "istio_tcp_received_bytes"}

SLEEP = Workload("front", "sleep-7d9-abc", "sleep", deployment="sleep",
                 labels={"app": "sleep", "version": "v1"}, ip="10.1.0.5")
REVIEWS = Workload("back", "reviews-v2-xyz", "bookinfo-reviews", deployment="reviews-v2",
                   labels={"app": "reviews", "version": "v2"}, ip="10.2.0.7")
TD = "cluster.local"


def outbound_hbone() -> ConnRecord:
    return ConnRecord(reporter="source", src=SLEEP, dst=REVIEWS, src_addr="10.1.0.5:40000",
                      dst_addr="10.2.0.7:15008", hbone_addr="10.2.0.7:9080",
                      src_identity=SLEEP.identity(TD), dst_identity=REVIEWS.identity(TD),
                      security="mutual_tls", direction="outbound",
                      dst_service="reviews.back.svc.cluster.local")


def inbound_plain() -> ConnRecord:
    return ConnRecord(reporter="destination", src=None, dst=REVIEWS, src_addr="10.9.0.1:5555",
                      dst_addr="10.2.0.7:9080", hbone_addr=None, src_identity=None,
                      dst_identity=REVIEWS.identity(TD), security="unknown", direction="inbound")


@pytest.fixture
def tel() -> tuple[ZtunnelTelemetry, io.StringIO]:
    log = io.StringIO()
    return ZtunnelTelemetry(CollectorRegistry(), "node-a", log), log


def samples(t: ZtunnelTelemetry) -> dict[str, list[Any]]:
    fams = text_string_to_metric_families(t.exposition().decode())
    return {f.name: f.samples for f in fams}


def test_canonical_precedence() -> None:
    assert (SLEEP.workload_name, SLEEP.canonical_service, SLEEP.canonical_revision) == ("sleep", "sleep", "v1")
    w = Workload("ns", "p", "sa", deployment="dep",
                 labels={"service.istio.io/canonical-name": "cn", "app.kubernetes.io/name": "kn",
                         "app": "a", "app.kubernetes.io/version": "kv", "version": "v"})
    assert (w.workload_name, w.canonical_service, w.canonical_revision) == ("dep", "cn", "kv")
    labels = dict(w.labels)
    del labels["service.istio.io/canonical-name"], labels["app.kubernetes.io/version"]
    w = Workload("ns", "p", "sa", deployment="dep", labels=labels)
    assert (w.canonical_service, w.canonical_revision) == ("kn", "v")
    bare = Workload("ns", "pod-1")
    assert (bare.workload_name, bare.canonical_service, bare.canonical_revision) == ("pod-1", "pod-1", "latest")
    assert bare.identity(TD) == "spiffe://cluster.local/ns/ns/sa/default"


def test_outbound_hbone(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    t, log = tel
    rec = outbound_hbone()
    t.opened(rec)
    t.closed(rec, bytes_received=100, bytes_sent=2500)
    s = samples(t)
    assert set(s) == NAMES
    opened = s["istio_tcp_connections_opened"]
    assert [x.name for x in opened] == ["istio_tcp_connections_opened_total"] and opened[0].value == 1
    labels = opened[0].labels
    assert set(labels) == set(LABELS)
    assert labels["app"] == "ztunnel" and labels["reporter"] == "source"
    assert labels["connection_security_policy"] == "mutual_tls"
    assert labels["source_principal"] == "spiffe://cluster.local/ns/front/sa/sleep"
    assert labels["destination_principal"] == "spiffe://cluster.local/ns/back/sa/bookinfo-reviews"
    assert labels["destination_service"] == "reviews.back.svc.cluster.local"
    assert (labels["destination_service_name"], labels["destination_service_namespace"]) == ("reviews", "back")
    assert (labels["source_workload"], labels["source_workload_namespace"]) == ("sleep", "front")
    assert (labels["destination_workload"], labels["destination_canonical_revision"]) == ("reviews-v2", "v2")
    assert labels["request_protocol"] == "tcp" and labels["response_flags"] == "-"
    assert labels["source_cluster"] == "Kubernetes"
    assert s["istio_tcp_received_bytes"][0].value == 100
    assert s["istio_tcp_sent_bytes"][0].value == 2500
    assert s["istio_tcp_connections_closed"][0].value == 1
    opened_line, closed_line = (json.loads(x) for x in log.getvalue().splitlines())
    assert opened_line["message"] == "connection opened" and opened_line["scope"] == "access"
    assert opened_line["src.identity"] == SLEEP.identity(TD) and opened_line["dst.hbone_addr"] == "10.2.0.7:9080"
    assert opened_line["dst.addr"] == "10.2.0.7:15008" and opened_line["direction"] == "outbound"
    assert closed_line["message"] == "connection complete"
    assert (closed_line["bytes_recv"], closed_line["bytes_sent"]) == (100, 2500)
    assert closed_line["duration"].endswith("ms") and "error" not in closed_line


def test_inbound_plaintext(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    t, log = tel
    rec = inbound_plain()
    t.opened(rec)
    t.closed(rec, 7, 9, error="connection reset")
    labels = samples(t)["istio_tcp_connections_opened"][0].labels
    assert labels["reporter"] == "destination" and labels["connection_security_policy"] == "unknown"
    assert labels["source_principal"] == "unknown" and labels["destination_principal"] == "unknown"
    assert labels["source_workload"] == "unknown" and labels["destination_service"] == "unknown"
    assert labels["destination_workload"] == "reviews-v2"
    lines = [json.loads(x) for x in log.getvalue().splitlines()]
    assert all("src.identity" not in x and "dst.identity" not in x for x in lines)
    assert lines[1]["error"] == "connection reset"


def test_series_accumulate_and_split_by_labels(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    t, _ = tel
    for _ in range(3):
        rec = outbound_hbone()
        t.opened(rec)
        t.closed(rec, 10, 1)
    t.opened(inbound_plain())
    opened = samples(t)["istio_tcp_connections_opened"]
    by_reporter = {x.labels["reporter"]: x.value for x in opened}
    assert by_reporter == {"source": 3, "destination": 1}
    assert samples(t)["istio_tcp_received_bytes"][0].value == 30


def test_no_created_series(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    t, _ = tel
    t.opened(outbound_hbone())
    assert "_created" not in t.exposition().decode()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    t, _ = tel
    rec = outbound_hbone()
    t.opened(rec)
    t.closed(rec, 1, 2)
    res = subprocess.run(["promtool", "check", "metrics"], input=t.exposition(),
                         capture_output=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


# --- real HTTP serving and scrape ------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> Iterator[tuple[ZtunnelTelemetry, int]]:
    """serve_metrics on a socket we create, in a loop on a thread, as ztunnel would in the node netns."""
    t, _ = tel
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    task: asyncio.Future[None] | None = None

    def run() -> None:
        nonlocal task
        asyncio.set_event_loop(loop)
        task = loop.create_task(t.serve_metrics(sock))
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass

    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        yield t, port
    finally:
        loop.call_soon_threadsafe(lambda: task and task.cancel())
        th.join(timeout=10)
        loop.close()
        sock.close()


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except OSError as exc:  # server not up yet
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_http_metrics_endpoint(served: tuple[ZtunnelTelemetry, int]) -> None:
    t, port = served
    t.opened(outbound_hbone())
    body = wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read(),
                    10, "/metrics")
    assert b'istio_tcp_connections_opened_total{app="ztunnel"' in body
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=2)
    assert err.value.code == 404


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason=f"{PROMETHEUS} absent: apt-get install prometheus")
def test_real_prometheus_scrape(served: tuple[ZtunnelTelemetry, int], tmp_path: Path) -> None:
    t, port = served
    t.opened(outbound_hbone())
    t.opened(inbound_plain())
    web = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                   "scrape_configs:\n  - job_name: ztunnel\n"
                   f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{web}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        query = urllib.parse.quote("istio_tcp_connections_opened_total")

        def series() -> list[dict[str, Any]]:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/v1/query?query={query}", timeout=2) as r:
                result = json.load(r)["data"]["result"]
            return result if len(result) == 2 else []

        result = wait_for(series, 60, "prometheus to scrape both series")
        by_reporter = {r["metric"]["reporter"]: r["metric"] for r in result}
        assert set(by_reporter) == {"source", "destination"}
        assert all(m["app"] == "ztunnel" and m["job"] == "ztunnel" for m in by_reporter.values())
        assert by_reporter["source"]["connection_security_policy"] == "mutual_tls"
        assert by_reporter["destination"]["connection_security_policy"] == "unknown"
        assert all(float(r["value"][1]) == 1 for r in result)
    finally:
        stop_process(proc, timeout=15)
