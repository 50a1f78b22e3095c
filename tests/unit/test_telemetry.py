"""ztunnel telemetry, judged against istio/ztunnel 1.24.0's sources (docs/policy-telemetry.md).

Each expectation names the upstream fact it checks: `src/proxy/metrics.rs` (labels, log
lines, bytes), `outbound.rs`/`inbound.rs`/`inbound_passthrough.rs` (principals, flags),
rust prometheus_client 0.22's text encoder (the OpenMetrics exposition).
"""

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
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from netlab.dataplane.telemetry import (CONTENT_TYPE, LABELS, ConnRecord, ZtunnelTelemetry, denied_by,
                                        http_status_error, io_error, rejection_error)
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


def passthrough() -> ConnRecord:
    """Outbound TCP to a workload that speaks no HBONE (ztunnel knows it from WDS)."""
    return ConnRecord(reporter="source", src=SLEEP, dst=REVIEWS, src_addr="10.1.0.5:40001",
                      dst_addr="10.2.0.7:9080", hbone_addr=None, src_identity=SLEEP.identity(TD),
                      dst_identity=REVIEWS.identity(TD), security="unknown", direction="outbound",
                      dst_service="reviews.back.svc.cluster.local")


@pytest.fixture
def tel() -> tuple[ZtunnelTelemetry, io.StringIO]:
    log = io.StringIO()
    return ZtunnelTelemetry("node-a", log), log


@pytest.fixture
def debug_tel() -> tuple[ZtunnelTelemetry, io.StringIO]:
    log = io.StringIO()
    return ZtunnelTelemetry("node-a", log, log_level="debug"), log


def samples(t: ZtunnelTelemetry) -> dict[str, list[Any]]:
    """Parsed with prometheus_client's *OpenMetrics* parser, which refuses anything else."""
    fams = text_string_to_metric_families(t.exposition()[1].decode())
    return {f.name: f.samples for f in fams}


def lines(log: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log.getvalue().splitlines()]


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


def test_outbound_hbone_series(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    t, _ = tel
    rec = outbound_hbone()
    t.opened(rec)
    t.closed(rec, bytes_received=100, bytes_sent=2500)
    s = samples(t)
    assert set(s) == NAMES
    opened = s["istio_tcp_connections_opened"]
    assert [x.name for x in opened] == ["istio_tcp_connections_opened_total"] and opened[0].value == 1
    labels = opened[0].labels
    # CommonTrafficLabels, no `app`: that is Prometheus' pod-label relabelling's (mesh-facts-2 §G6)
    assert list(labels) == list(LABELS) and "app" not in labels
    assert labels["reporter"] == "source" and labels["connection_security_policy"] == "mutual_tls"
    assert labels["source_principal"] == "spiffe://cluster.local/ns/front/sa/sleep"
    assert labels["destination_principal"] == "spiffe://cluster.local/ns/back/sa/bookinfo-reviews"
    assert labels["destination_service"] == "reviews.back.svc.cluster.local"
    assert (labels["destination_service_name"], labels["destination_service_namespace"]) == ("reviews", "back")
    assert (labels["source_workload"], labels["source_workload_namespace"]) == ("sleep", "front")
    assert (labels["destination_workload"], labels["destination_canonical_revision"]) == ("reviews-v2", "v2")
    assert labels["request_protocol"] == "tcp" and labels["response_flags"] == "-"
    assert labels["source_cluster"] == labels["destination_cluster"] == "Kubernetes"
    # copy.rs: received = downstream→upstream, sent = upstream→downstream
    assert s["istio_tcp_received_bytes"][0].value == 100
    assert s["istio_tcp_sent_bytes"][0].value == 2500
    assert s["istio_tcp_connections_closed"][0].value == 1


def test_bytes_count_while_the_connection_lives(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    """ztunnel 1.24 copy.rs adds every write to the byte counters (increment_send/recv): a
    pooled, still-open connection's bytes are in the scrape before it closes, and the close
    adds only what was not counted yet; the access log still has the connection's totals."""
    t, log = tel
    rec = outbound_hbone()
    t.opened(rec)
    received, sent = t.counter(rec, "received"), t.counter(rec, "sent")
    received(60)
    sent(2000)
    s = samples(t)
    assert s["istio_tcp_received_bytes"][0].value == 60 and s["istio_tcp_sent_bytes"][0].value == 2000
    assert s["istio_tcp_connections_closed"] == [] or s["istio_tcp_connections_closed"][0].value == 0
    received(40)
    t.closed(rec, bytes_received=100, bytes_sent=2500)  # 500 bytes were never reported live
    s = samples(t)
    assert s["istio_tcp_received_bytes"][0].value == 100 and s["istio_tcp_sent_bytes"][0].value == 2500
    (line,) = lines(log)
    assert (line["bytes_sent"], line["bytes_recv"]) == (100, 2500)


async def _relay_counts() -> tuple[list[int], list[int]]:
    """CountingReader/Writer hand each chunk's size to their callback as it moves."""
    import asyncio

    from netlab.dataplane.proxy.relay import CountingReader, CountingWriter

    got_r: list[int] = []
    got_w: list[int] = []
    reader = asyncio.StreamReader()
    reader.feed_data(b"abcde")
    r = CountingReader(reader, got_r.append)
    assert await r.read(3) == b"abc"

    class Sink:
        def write(self, data: bytes) -> None:
            pass

    w = CountingWriter(Sink(), on_bytes=got_w.append)  # type: ignore[arg-type]
    w.write(b"xy")
    w.write(b"")
    return got_r, got_w


def test_counting_relays_report_each_chunk() -> None:
    import asyncio

    assert asyncio.run(_relay_counts()) == ([3], [2])


def test_access_log_unflips_bytes_for_the_source_reporter(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    """metrics.rs: "Istio flips the metric for source ... Unflip for logs"."""
    t, log = tel
    out, inb = outbound_hbone(), replace(inbound_plain())
    t.opened(out)
    t.closed(out, bytes_received=100, bytes_sent=2500)
    t.opened(inb)
    t.closed(inb, bytes_received=7, bytes_sent=9)
    outbound_line, inbound_line = lines(log)
    assert (outbound_line["bytes_sent"], outbound_line["bytes_recv"]) == (100, 2500)
    assert (inbound_line["bytes_sent"], inbound_line["bytes_recv"]) == (9, 7)


def test_connection_opened_is_a_debug_line(tel: tuple[ZtunnelTelemetry, io.StringIO],
                                           debug_tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    """At ztunnel's default level (info) only "connection complete" shows."""
    for t, log in (tel, debug_tel):
        rec = outbound_hbone()
        t.opened(rec)
        t.closed(rec, 1, 2)
    assert [x["message"] for x in lines(tel[1])] == ["connection complete"]
    opened, complete = lines(debug_tel[1])
    assert (opened["level"], opened["message"]) == ("debug", "connection opened")
    assert (complete["level"], complete["message"]) == ("info", "connection complete")


def test_access_log_fields(debug_tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    t, log = debug_tel
    rec = outbound_hbone()
    t.opened(rec)
    t.closed(rec, 1, 2)
    opened, complete = lines(log)
    assert opened["scope"] == "access" and opened["direction"] == "outbound"
    # the pod name, not the deployment (ConnectionResult::new: wl.name)
    assert (opened["src.workload"], opened["dst.workload"]) == ("sleep-7d9-abc", "reviews-v2-xyz")
    assert opened["src.identity"] == SLEEP.identity(TD) and opened["dst.identity"] == REVIEWS.identity(TD)
    assert opened["dst.addr"] == "10.2.0.7:15008" and opened["dst.hbone_addr"] == "10.2.0.7:9080"
    assert opened["dst.service"] == "reviews.back.svc.cluster.local"
    assert (opened["src.namespace"], opened["dst.namespace"]) == ("front", "back")
    # 1.24 logs no cluster (src.cluster/dst.cluster came with ztunnel#1994, 1.31)
    assert "src.cluster" not in complete and "dst.cluster" not in complete
    assert complete["duration"].endswith("ms") and "error" not in complete


@pytest.mark.parametrize("make", [inbound_plain, passthrough])
def test_destination_principal_without_mtls(tel: tuple[ZtunnelTelemetry, io.StringIO], make: Any) -> None:
    """with_destination sets destination_principal from the workload; source_principal only
    comes from the derived (mTLS) source; the log shows no identities without mTLS."""
    t, log = tel
    rec = make()
    t.opened(rec)
    t.closed(rec, 7, 9, error="connection reset")
    labels = samples(t)["istio_tcp_connections_opened"][0].labels
    assert labels["connection_security_policy"] == "unknown"
    assert labels["destination_principal"] == "spiffe://cluster.local/ns/back/sa/bookinfo-reviews"
    assert labels["source_principal"] == "unknown"
    (line,) = lines(log)
    assert "src.identity" not in line and "dst.identity" not in line
    assert (line["level"], line["error"]) == ("error", "connection reset")


def test_inbound_plaintext_source_unknown(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    t, _ = tel
    t.opened(inbound_plain())
    labels = samples(t)["istio_tcp_connections_opened"][0].labels
    assert labels["reporter"] == "destination" and labels["source_workload"] == "unknown"
    assert labels["destination_service"] == "unknown" and labels["destination_workload"] == "reviews-v2"


def test_denied_connection(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    """record_with_flag: only the closed counter carries DENY; opened and bytes were made
    at open with `-`; the complete line has a duration and the real error text."""
    t, log = tel
    rec = replace(outbound_hbone(), reporter="destination", direction="inbound")
    t.opened(rec)
    err = rejection_error(denied_by("istio-system/istio_converted_static_strict"))
    t.closed(replace(rec, response_flags="DENY"), 0, 0, error=err)
    s = samples(t)
    flags = {name: [x.labels["response_flags"] for x in series] for name, series in s.items()}
    assert flags == {"istio_tcp_connections_opened": ["-"], "istio_tcp_connections_closed": ["DENY"],
                     "istio_tcp_received_bytes": ["-"], "istio_tcp_sent_bytes": ["-"]}
    (line,) = lines(log)
    assert line["level"] == "error" and line["duration"].endswith("ms")
    assert line["error"] == ("connection closed due to policy rejection: explicitly denied by: "
                             "istio-system/istio_converted_static_strict")


def test_error_texts() -> None:
    """src/proxy.rs @1.24.0 Display impls."""
    assert http_status_error(401) == "http status: 401 Unauthorized"
    assert http_status_error(503) == "http status: 503 Service Unavailable"
    assert io_error(ConnectionRefusedError(111, "Connection refused")) == "Connection refused (os error 111)"


def test_early_deny_is_a_warning(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    t, log = tel
    t.failed("10.1.0.5:40000", "10.2.0.7:15008", "inbound", "invalid CONNECT address nonsense")
    (line,) = lines(log)
    assert (line["level"], line["message"], line["direction"]) == ("warn", "connection failed", "inbound")
    assert line["error"] == "invalid CONNECT address nonsense" and samples(t) == {
        name: [] for name in NAMES}


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
    received = {x.labels["reporter"]: x.value for x in samples(t)["istio_tcp_received_bytes"]}
    assert received == {"source": 30, "destination": 0}


def test_openmetrics_exposition(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    """rust prometheus_client 0.22 (ztunnel 1.24's): HELP text + '.', TYPE without _total,
    integer samples, `# EOF` last, and ztunnel's Content-Type."""
    t, _ = tel
    rec = outbound_hbone()
    t.opened(rec)
    t.closed(rec, 1, 2)
    ctype, body = t.exposition()
    assert ctype == CONTENT_TYPE == "application/openmetrics-text;charset=utf-8;version=1.0.0"
    text = body.decode()
    assert text.endswith("# EOF\n") and "_created" not in text
    assert "# HELP istio_tcp_connections_opened The total number of TCP connections opened.\n" in text
    assert "# TYPE istio_tcp_connections_opened counter\n" in text
    assert "_total counter" not in text
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if not line.startswith("#")]
    assert values and all(v.isdigit() for v in values), values
    order = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert order == ["istio_tcp_connections_opened", "istio_tcp_connections_closed",
                     "istio_tcp_received_bytes", "istio_tcp_sent_bytes"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics(tel: tuple[ZtunnelTelemetry, io.StringIO]) -> None:
    """promtool 2.42 parses the exposition (no parse error, exit 1) and lints it as the
    Prometheus *text* format: there each `<family>_total` sample is a family of its own
    without HELP, the only problem it reports (exit 3), as for real ztunnel's OpenMetrics."""
    t, _ = tel
    rec = outbound_hbone()
    t.opened(rec)
    t.closed(rec, 1, 2)
    res = subprocess.run(["promtool", "check", "metrics"], input=t.exposition()[1],
                         capture_output=True, timeout=30)
    problems = sorted(res.stderr.decode().splitlines())
    assert res.returncode in (0, 3), res.stdout + res.stderr
    assert problems == sorted(f"{n}_total no help text" for n in NAMES), problems


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
    assert b'istio_tcp_connections_opened_total{reporter="source"' in body
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
        assert all("app" not in m and m["job"] == "ztunnel" for m in by_reporter.values())
        assert by_reporter["source"]["connection_security_policy"] == "mutual_tls"
        assert by_reporter["destination"]["connection_security_policy"] == "unknown"
        assert all(float(r["value"][1]) == 1 for r in result)
    finally:
        stop_process(proc, timeout=15)
