"""Envoy behaviour shared by the sidecar and the waypoint, judged against real Envoy output.

Access-log lines are compared with lines real sidecars printed (kyma#12092, istio#45802),
the 503 body with istio#55472's text, TLS with real handshakes between the contexts, and
the metrics exposition with promtool.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netlab.dataplane.ca import LabCA
from netlab.dataplane.envoy import accesslog, flags, headers, inspector, istio_tls, local_reply, retry
from netlab.dataplane.envoy.stats import (IstioStats, PeerInfo, ServiceRef, client_edge,
                                          http_labels, server_edge, tcp_labels)
from netlab.dataplane.http1 import Request
from netlab.dataplane.identity import IdentityMismatch
from netlab.snapshot import Workload

T0 = 1631357593.360  # 2021-09-11T10:53:13.360Z


# -- access log -----------------------------------------------------------------------------
def test_filter_chain_not_found_line_is_the_real_one() -> None:
    """The STRICT rejection line kyma#12092 and istio#51982 show, field for field."""
    e = local_reply.filter_chain_not_found()
    entry = accesslog.AccessEntry(start=T0, response_code=e.status, response_flags=e.flag_text,
                                  response_code_details=e.details,
                                  downstream_local_address="10.244.1.24:16686",
                                  downstream_remote_address="10.244.3.150:42294")
    assert accesslog.text_line(entry) == (
        '[2021-09-11T10:53:13.360Z] "- - -" 0 NR filter_chain_not_found - "-" 0 0 0 - "-" "-" "-" '
        '"-" "-" - - 10.244.1.24:16686 10.244.3.150:42294 - -')


def test_connection_termination_line_and_body() -> None:
    """istio#45802's `"GET /v1/status HTTP/1.1" 503 UC upstream_reset_before_response_started
    {connection_termination} - "-" 0 95 0 -` and istio#55472's body."""
    r = local_reply.upstream_reset(local_reply.CONNECTION_TERMINATION)
    assert r.body == (b"upstream connect error or disconnect/reset before headers. "
                      b"reset reason: connection termination")
    assert len(r.body) == 95 and r.status == 503
    entry = accesslog.AccessEntry(start=T0, method="GET", path="/v1/status", protocol="HTTP/1.1",
                                  response_code=r.status, response_flags=r.flag_text,
                                  response_code_details=r.details, bytes_sent=len(r.body),
                                  authority="prometheus:9090", upstream_cluster="PassthroughCluster",
                                  upstream_host="10.96.0.20:9090", route_name="allow_any")
    line = accesslog.text_line(entry)
    assert '"GET /v1/status HTTP/1.1" 503 UC upstream_reset_before_response_started' \
           '{connection_termination} - "-" 0 95 0 - ' in line
    assert line.endswith('"prometheus:9090" "10.96.0.20:9090" PassthroughCluster - - - - allow_any')


def test_json_form_has_istios_keys_and_nulls() -> None:
    entry = accesslog.AccessEntry(start=T0, method="GET", path="/", protocol="HTTP/1.1",
                                  response_code=200, upstream_cluster="inbound|9090||",
                                  route_name="default")
    doc = json.loads(accesslog.json_line(entry))
    assert set(doc) == {
        "start_time", "route_name", "method", "path", "protocol", "response_code",
        "response_flags", "response_code_details", "connection_termination_details",
        "bytes_received", "bytes_sent", "duration", "upstream_service_time", "x_forwarded_for",
        "user_agent", "request_id", "authority", "upstream_host", "upstream_cluster",
        "upstream_local_address", "downstream_local_address", "downstream_remote_address",
        "requested_server_name", "upstream_transport_failure_reason"}
    assert doc["response_code"] == 200 and doc["user_agent"] is None
    assert doc["response_flags"] == "-" and doc["start_time"] == "2021-09-11T10:53:13.360Z"


# -- local replies, flags, retries -------------------------------------------------------
def test_retried_connect_failure() -> None:
    r = local_reply.upstream_reset(local_reply.CONNECTION_FAILURE, local_reply.CONNECT_REFUSED,
                                   retried=True)
    assert r.body.decode() == (
        "upstream connect error or disconnect/reset before headers. retried and the latest "
        "reset reason: remote connection failure, transport failure reason: delayed connect error: 111")
    assert r.flag_text == "UF,URX"
    assert r.details == "upstream_reset_before_response_started{remote_connection_failure," \
                        "delayed_connect_error:_111}"


def test_other_local_replies_and_flag_order() -> None:
    assert (local_reply.no_healthy_upstream().body, local_reply.no_healthy_upstream().flag_text) \
        == (b"no healthy upstream", "UH")
    nr = local_reply.route_not_found()
    assert (nr.status, nr.body, nr.flag_text, nr.details) == (404, b"", "NR", "route_not_found")
    assert flags.render({"URX", "UC"}) == "UC,URX" and flags.render(()) == "-"
    with pytest.raises(ValueError):
        flags.render({"XX"})


def test_default_retry_policy() -> None:
    assert retry.DEFAULT.num_retries == 2
    assert retry.DEFAULT.retries_reset(local_reply.CONNECTION_FAILURE)
    assert not retry.DEFAULT.retries_reset(local_reply.CONNECTION_TERMINATION)
    assert retry.DEFAULT.retries_status(503) and not retry.DEFAULT.retries_status(502)
    assert not retry.NONE.retries_reset(local_reply.CONNECTION_FAILURE)
    assert 0 <= retry.DEFAULT.backoff(5) <= retry.MAX_INTERVAL


# -- istio_stats ---------------------------------------------------------------------------
SLEEP = Workload("grafana", "curl-0", "curl", deployment="curl",
                 labels={"app": "curl", "version": "v1"}, ip="10.1.0.5")
PROM = Workload("monitoring", "prometheus-0", "prometheus", deployment="prometheus",
                labels={"app": "prometheus"}, ip="10.1.0.9")
SAN_SLEEP = "spiffe://cluster.local/ns/grafana/sa/curl"
SAN_PROM = "spiffe://cluster.local/ns/monitoring/sa/prometheus"
SVC = ServiceRef.of_fqdn("prometheus.monitoring.svc.cluster.local")


def test_client_side_labels() -> None:
    e = client_edge(PeerInfo.of(SLEEP), SAN_SLEEP, PeerInfo.of(PROM), SAN_PROM, SVC)
    got = http_labels(e, 200, "-")
    assert got["reporter"] == "source" and got["connection_security_policy"] == "unknown"
    assert (got["source_workload"], got["source_app"], got["source_version"]) == ("curl", "curl", "v1")
    assert got["destination_version"] == "unknown" and got["destination_canonical_revision"] == "latest"
    assert (got["destination_service"], got["destination_service_name"],
            got["destination_service_namespace"]) == (
        "prometheus.monitoring.svc.cluster.local", "prometheus", "monitoring")
    assert got["grpc_response_status"] == "" and got["source_cluster"] == "Kubernetes"


def test_passthrough_uses_the_host_header() -> None:
    e = client_edge(PeerInfo.of(SLEEP), None, None, None, ServiceRef.passthrough("label-proxy:8080"))
    got = http_labels(e, 503, "UC")
    assert (got["destination_service"], got["destination_service_name"],
            got["destination_service_namespace"]) == ("label-proxy:8080", "PassthroughCluster", "unknown")
    assert got["destination_workload"] == "unknown" and got["source_principal"] == "unknown"


def test_server_side_security_and_hbone_unknown_source() -> None:
    mtls = server_edge(PeerInfo.of(PROM), SAN_PROM, PeerInfo.of(SLEEP), SAN_SLEEP, SVC)
    assert http_labels(mtls, 200, "-")["connection_security_policy"] == "mutual_tls"
    plain = server_edge(PeerInfo.of(PROM), SAN_PROM, None, None, SVC)
    no_local = server_edge(PeerInfo.of(PROM), None, PeerInfo.of(SLEEP), SAN_SLEEP, SVC)
    assert http_labels(no_local, 200, "-")["connection_security_policy"] == "none"
    assert tcp_labels(plain, "-")["connection_security_policy"] == "none"
    # HBONE-terminated chain (1.23/1.24): a principal but no peer metadata (§A4).
    hbone = server_edge(PeerInfo.of(PROM), SAN_PROM, None, SAN_SLEEP, SVC)
    got = tcp_labels(hbone, "-")
    assert got["connection_security_policy"] == "mutual_tls"
    assert got["source_principal"] == SAN_SLEEP and got["source_workload_namespace"] == "grafana"
    assert (got["source_workload"], got["source_canonical_service"], got["source_app"],
            got["source_version"], got["source_canonical_revision"], got["source_cluster"]) == (
        "unknown", "unknown", "unknown", "unknown", "latest", "unknown")
    assert "response_code" not in got


def _stats() -> tuple[IstioStats, CollectorRegistry]:
    reg = CollectorRegistry()
    st = IstioStats(reg)
    e = server_edge(PeerInfo.of(PROM), SAN_PROM, PeerInfo.of(SLEEP), SAN_SLEEP, SVC)
    st.request(e, 200, "-", 3.2, 0, 1234)
    st.request(e, 200, "-", 700, 10, 20)
    st.request(e, 503, "UC", 5, 0, 95)
    st.tcp_opened(e)
    st.tcp_closed(e, 100, 200)
    return st, reg


def test_exposition_parses_with_envoys_buckets() -> None:
    _, reg = _stats()
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}
    assert set(fams) == {"istio_requests", "istio_request_duration_milliseconds",
                         "istio_request_bytes", "istio_response_bytes",
                         "istio_tcp_connections_opened", "istio_tcp_connections_closed",
                         "istio_tcp_sent_bytes", "istio_tcp_received_bytes"}
    total = [s for s in fams["istio_requests"].samples if s.name == "istio_requests_total"]
    assert sorted((s.labels["response_code"], s.value) for s in total) == [("200", 2.0), ("503", 1.0)]
    buckets = {s.labels["le"]: s.value for s in fams["istio_request_duration_milliseconds"].samples
               if s.name.endswith("_bucket") and s.labels["response_code"] == "200"}
    assert buckets["1"] == 0 and buckets["5"] == 1 and buckets["500"] == 1 and buckets["1000"] == 2
    assert buckets["+Inf"] == 2 and "3600000" in buckets
    uc = {s.labels["le"]: s.value for s in fams["istio_request_duration_milliseconds"].samples
          if s.name.endswith("_bucket") and s.labels["response_flags"] == "UC"}
    assert uc["1"] == 0 and uc["5"] == 1  # an upper bound is inclusive (le)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_exposition() -> None:
    """promtool parses it; its only lint is the unit in Istio's own metric name."""
    _, reg = _stats()
    res = subprocess.run(["promtool", "check", "metrics"], input=generate_latest(reg),
                         capture_output=True, timeout=60)
    problems = [ln for ln in res.stderr.decode().splitlines() if ln.strip()]
    assert res.returncode in (0, 3), res.stderr
    assert problems == ['istio_request_duration_milliseconds use base unit "seconds" '
                        'instead of "milliseconds"'], problems


# -- headers --------------------------------------------------------------------------------
def test_request_headers_as_envoy_sets_them() -> None:
    req = Request("GET", "/", [("Host", "prometheus:9090"), ("Connection", "keep-alive")])
    headers.downstream_request(req, tls=False)
    assert req.header("x-forwarded-proto") == "http" and len(req.header("x-request-id") or "") == 36
    assert req.header("x-forwarded-for") is None  # use_remote_address: false
    up = headers.upstream_request(req, 2)
    assert up.header("x-envoy-attempt-count") == "2" and up.header("connection") is None


def test_metadata_exchange_round_trip_and_xfcc() -> None:
    me = PeerInfo.of(SLEEP)
    hdrs = [("Host", "x")] + headers.mx_headers(headers.node_id("sidecar", "10.1.0.5", "curl-0", "grafana"), me)
    rest, peer = headers.take_mx(hdrs)
    assert rest == [("Host", "x")] and peer == me
    assert headers.take_mx([("x-envoy-peer-metadata", "!!")])[1] is None
    x = headers.client_cert_header(SAN_PROM, SAN_SLEEP, b"der")
    assert x.startswith(f"By={SAN_PROM};Hash=") and x.endswith(f';Subject="";URI={SAN_SLEEP}')


# -- TLS and the inspectors -------------------------------------------------------------------
def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, sni: str | None) -> tuple[ssl.SSLObject, ssl.SSLObject, bytes]:
    """Drive a handshake in memory; returns both ends and the client's first flight."""
    sin, sout, cin, cout = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    s = server.wrap_bio(sin, sout, server_side=True)
    c = client.wrap_bio(cin, cout, server_hostname=sni)
    first = b""
    for _ in range(10):
        for side in (c, s):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        out = cout.read()
        first = first or out
        sin.write(out)
        cin.write(sout.read())
        try:
            c.do_handshake()
            s.do_handshake()
            return s, c, first
        except ssl.SSLWantReadError:
            continue
    raise AssertionError("no handshake")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    ca = LabCA(tmp_path_factory.mktemp("ca"))
    other = LabCA(tmp_path_factory.mktemp("other"))
    return {"curl": ca.issue_workload("grafana", "curl"),
            "prom": ca.issue_workload("monitoring", "prometheus"),
            "foreign": other.issue_workload("grafana", "curl")}


def test_sidecar_mtls_http_negotiates_http11_with_sni(certs: dict) -> None:
    srv = istio_tls.server_context(certs["prom"], istio_tls.SERVER_ALPN_HTTP)
    cli = istio_tls.client_context(certs["curl"], istio_tls.client_alpn("http/1.1"))
    name = istio_tls.sni(9090, "prometheus.monitoring.svc.cluster.local")
    s, c, first = _handshake(srv, cli, name)
    assert c.selected_alpn_protocol() == "http/1.1"
    assert str(istio_tls.verify_server(c, [SAN_PROM])) == SAN_PROM
    assert str(istio_tls.verify_client(s, "cluster.local")) == SAN_SLEEP
    seen = inspector.inspect(first)
    assert seen == inspector.Inspection("tls", "outbound_.9090_._.prometheus.monitoring.svc.cluster.local",
                                        ("istio-http/1.1", "istio", "http/1.1"))
    with pytest.raises(IdentityMismatch):
        istio_tls.verify_server(c, ["spiffe://cluster.local/ns/monitoring/sa/other"])


def test_tcp_alpn_and_foreign_client_refused(certs: dict) -> None:
    srv = istio_tls.server_context(certs["prom"], istio_tls.SERVER_ALPN_TCP)
    _, c, _ = _handshake(srv, istio_tls.client_context(certs["curl"], istio_tls.ALPN_TCP), None)
    assert c.selected_alpn_protocol() == "istio-peer-exchange"
    foreign = istio_tls.client_context(certs["foreign"], istio_tls.ALPN_TCP)
    foreign.verify_mode = ssl.CERT_NONE  # the client trusts anything; the server must not
    with pytest.raises(ssl.SSLError):
        _handshake(srv, foreign, None)


def test_http_inspector_and_partial_input() -> None:
    assert inspector.inspect(b"GET / HTTP/1.1\r\nHost: a\r\n") == inspector.Inspection(
        "raw_buffer", alpn=("http/1.1",))
    assert inspector.inspect(b"GET /ver") is None
    assert inspector.inspect(b"GET /ver", final=True) == inspector.Inspection("raw_buffer")
    assert inspector.inspect(b"\x16\x03\x01\x02") is None
    assert inspector.inspect(b"SSH-2.0-OpenSSH\r\n") == inspector.Inspection("raw_buffer")
    assert inspector.inspect(inspector.H2_PREFACE) == inspector.Inspection("raw_buffer", alpn=("h2c",))
