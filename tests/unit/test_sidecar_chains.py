"""The sidecar's chains on loopback, against real sockets, real TLS and real HTTP servers.

No namespaces: each test builds a small `SidecarSnapshot` by hand (xDS names as istiod
makes them), feeds a socketpair into a chain as the downstream, and judges what a client
gets back and the access-log line, against Envoy's documented behaviour (mesh-facts-2 §D).
"""

from __future__ import annotations

import asyncio
import io
import socket
from typing import Any, Awaitable, Callable

import pytest

from netlab.dataplane import http1
from netlab.dataplane.ca import LabCA
from netlab.dataplane.envoy.accesslog import AccessLog
from netlab.dataplane.envoy.stats import IstioStats
from netlab.dataplane.identity import CertManager, WorkloadCert
from netlab.dataplane.sidecar.context import Downstream, Env
from netlab.dataplane.sidecar.http_chain import HttpChain
from netlab.dataplane.sidecar.routing import match_chain, match_vhost, strip_port
from netlab.dataplane.sidecar.upstream import Connector
from netlab.dataplane.envoy.inspector import Inspection
from netlab import snapshot, xds

FQDN = "prometheus.monitoring.svc.cluster.local"
VIP = "10.96.0.20"


def _cluster(port: int, transport: str = "plaintext", sans: tuple[str, ...] = ()) -> xds.Cluster:
    return xds.Cluster(
        xds.outbound_cluster_name(9090, FQDN), "EDS", "outbound", FQDN, 9090, "HTTP",
        endpoints=(xds.LbEndpoint("127.0.0.1", port, "monitoring/prometheus-0", "prometheus",
                                  "istio" if transport == "mtls" else "disabled", False, transport),),
        tls=xds.UpstreamTls(xds.outbound_sni(9090, FQDN), xds.CLIENT_TCP_ALPNS, sans),
        services=(xds.ServiceRef(FQDN, "prometheus", "monitoring"),), connect_timeout_ms=2000)


def _route_config() -> xds.RouteConfiguration:
    vh = xds.VirtualHost(xds.vhost_name(FQDN, 9090),
                         (FQDN, "prometheus.monitoring", "prometheus.monitoring.svc", VIP),
                         (xds.Route("default", xds.outbound_cluster_name(9090, FQDN),
                                    retry_policy=xds.RetryPolicy()),))
    allow = xds.VirtualHost("allow_any", ("*",), (xds.Route("allow_any", "PassthroughCluster"),))
    return xds.RouteConfiguration("9090", (vh, allow))


def _snap(cluster: xds.Cluster) -> xds.SidecarSnapshot:
    pod = snapshot.Workload("grafana", "curl-0", "curl", deployment="curl",
                            labels={"app": "curl"}, ip="127.0.0.1")
    prom = snapshot.Workload("monitoring", "prometheus-0", "prometheus", deployment="prometheus",
                             labels={"app": "prometheus"}, ip="127.0.0.2")
    return xds.SidecarSnapshot(
        workload=pod, node="n1", trust_domain="cluster.local", capture="redirect", workdir="/none",
        ca=snapshot.CertAuthority("https://127.0.0.1:1", "/none", "/none"),
        bootstrap=snapshot.Bootstrap("/none", "/none"), workloads=(pod, prom),
        route_configs=(_route_config(),),
        clusters=(cluster, xds.Cluster("PassthroughCluster", "ORIGINAL_DST")))


async def _server(answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                  ssl_ctx: Any = None) -> tuple[asyncio.AbstractServer, int]:
    srv = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ssl_ctx)
    return srv, srv.sockets[0].getsockname()[1]


async def _echo_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def respond(req: http1.Request) -> http1.Response:
        return http1.Response(200, [("content-type", "text/plain")],
                              f"{req.header('host')} {req.header('x-envoy-attempt-count')}".encode())
    await http1.serve(reader, writer, respond, lambda e: None)
    writer.close()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A STRICT sidecar's answer to plaintext: read, then close without a response."""
    await reader.read(65536)
    writer.close()


async def _request(env: Env, dst: tuple[str, int], host: str, direction: str = "outbound",
                   **down: Any) -> http1.Response:
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    hcm = xds.HttpConnectionManager("outbound_0.0.0.0_9090", rds="9090")
    chain = asyncio.create_task(HttpChain(env, Downstream(rb, wb, direction, dst, ("127.0.0.1", 40000),  # type: ignore[arg-type]
                                                           **down), hcm).serve())
    client = http1.ClientConnection(ra, wa)
    await client.send_request(http1.Request("GET", "/api/v1/status/buildinfo",
                                            [("Host", host), ("User-Agent", "curl/7.88.1")]))
    resp = await client.read_response()
    wa.close()
    await asyncio.wait_for(chain, 5)
    return resp


def _env(snap: xds.SidecarSnapshot, certs: CertManager | None = None) -> tuple[Env, io.StringIO]:
    out = io.StringIO()
    env = Env(snap, Connector(snap, certs), IstioStats(), AccessLog(out))  # type: ignore[arg-type]
    return env, out


@pytest.mark.parametrize("host", ["prometheus.monitoring", "prometheus.monitoring.svc", FQDN, VIP,
                                  f"{FQDN}:9090", "PROMETHEUS.monitoring:9090"])
def test_domains_route_to_the_service(host: str) -> None:
    async def go() -> None:
        srv, port = await _server(_echo_http)
        env, out = _env(_snap(_cluster(port)))
        resp = await _request(env, (VIP, 9090), host)
        srv.close()
        assert resp.status == 200 and resp.body == f"{host} 1".encode()
        assert resp.header("x-envoy-upstream-service-time") is not None
        line = out.getvalue()
        assert f'"{host}" "127.0.0.1:{port}" outbound|9090||{FQDN} ' in line and line.rstrip().endswith(" default")
    asyncio.run(go())


def test_wrong_host_goes_to_passthrough_in_plaintext() -> None:
    async def go() -> None:
        srv, port = await _server(_echo_http)
        env, out = _env(_snap(_cluster(1)))
        resp = await _request(env, ("127.0.0.1", port), "label-proxy.monitoring:8080")
        srv.close()
        assert resp.status == 200
        line = out.getvalue()
        assert f'"label-proxy.monitoring:8080" "127.0.0.1:{port}" PassthroughCluster ' in line
        assert line.rstrip().endswith(" allow_any")
        labels = next(iter(env.stats.requests))
        assert "PassthroughCluster" in labels and "label-proxy.monitoring:8080" in labels
    asyncio.run(go())


def test_passthrough_to_a_strict_server_is_the_95_byte_uc() -> None:
    async def go() -> None:
        srv, port = await _server(_hang_up)
        env, out = _env(_snap(_cluster(1)))
        resp = await _request(env, ("127.0.0.1", port), "grafana-proxy:8080")
        srv.close()
        assert resp.status == 503 and len(resp.body) == 95
        assert resp.body.endswith(b"reset reason: connection termination")
        line = out.getvalue()
        assert ' 503 UC upstream_reset_before_response_started{connection_termination} - "-" 0 95 ' in line
        assert " PassthroughCluster " in line and line.rstrip().endswith(" allow_any")
    asyncio.run(go())


def test_refused_endpoint_is_retried_then_uf_urx() -> None:
    async def go() -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens: connection refused
        env, out = _env(_snap(_cluster(port)))
        resp = await _request(env, (VIP, 9090), "prometheus.monitoring")
        assert resp.status == 503
        assert resp.body.decode() == (
            "upstream connect error or disconnect/reset before headers. retried and the latest "
            "reset reason: remote connection failure, transport failure reason: delayed connect error: 111")
        assert " 503 UF,URX upstream_reset_before_response_started{remote_connection_failure," \
               "delayed_connect_error:_111} " in out.getvalue()
    asyncio.run(go())


class _Certs:
    """A CertManager look-alike issuing straight from a lab CA."""

    def __init__(self, ca: LabCA) -> None:
        self.ca = ca
        self.issued: dict[tuple[str, str], WorkloadCert] = {}

    async def get(self, ns: str, sa: str) -> WorkloadCert:
        return self.issued.setdefault((ns, sa), self.ca.issue_workload(ns, sa))


def test_istio_mtls_upstream_checks_the_san(tmp_path: Any) -> None:
    from netlab.dataplane.envoy import istio_tls

    async def go() -> None:
        ca = LabCA(tmp_path)
        srv_ctx = istio_tls.server_context(ca.issue_workload("monitoring", "prometheus"),
                                           istio_tls.SERVER_ALPN_HTTP)
        seen: list[str | None] = []

        async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            seen.append(w.get_extra_info("ssl_object").selected_alpn_protocol())
            await _echo_http(r, w)

        srv, port = await _server(answer, srv_ctx)
        good = _cluster(port, "mtls", ("spiffe://cluster.local/ns/monitoring/sa/prometheus",))
        env, out = _env(_snap(good), _Certs(ca))  # type: ignore[arg-type]
        resp = await _request(env, (VIP, 9090), "prometheus.monitoring")
        assert resp.status == 200 and seen == ["http/1.1"]
        bad = _cluster(port, "mtls", ("spiffe://cluster.local/ns/monitoring/sa/other",))
        env, out = _env(_snap(bad), _Certs(ca))  # type: ignore[arg-type]
        resp = await _request(env, (VIP, 9090), "prometheus.monitoring")
        srv.close()
        assert resp.status == 503 and b"CERTIFICATE_VERIFY_FAILED" in resp.body
        assert " 503 UF,URX " in out.getvalue()
    asyncio.run(go())


def test_chain_matching_strict_has_no_plaintext_chain() -> None:
    tls = xds.FilterChain("0.0.0.0_9090", xds.FilterChainMatch(destination_port=9090,
                                                              transport_protocol="tls"),
                          tls=xds.DownstreamTls())
    raw = xds.FilterChain("0.0.0.0_9090", xds.FilterChainMatch(destination_port=9090,
                                                              transport_protocol="raw_buffer"))
    strict = xds.Listener("virtualInbound", "0.0.0.0", 15006, filter_chains=(tls,))
    permissive = xds.Listener("virtualInbound", "0.0.0.0", 15006, filter_chains=(tls, raw))
    plain = Inspection("raw_buffer", alpn=("http/1.1",))
    assert match_chain(strict, "10.1.0.9", 9090, plain) is None
    assert match_chain(permissive, "10.1.0.9", 9090, plain) is raw
    assert match_chain(strict, "10.1.0.9", 9090, Inspection("tls", "x", ("istio-http/1.1",))) is tls
    assert match_chain(strict, "10.1.0.9", 9091, plain) is None


def test_vhost_matching_order() -> None:
    rc = _route_config()
    assert match_vhost(rc, "prometheus.monitoring:9090").name == f"{FQDN}:9090"  # type: ignore[union-attr]
    assert match_vhost(rc, "prometheus").name == "allow_any"  # type: ignore[union-attr]
    assert strip_port("[::1]:80") == "[::1]" and strip_port("a:1") == "a"
