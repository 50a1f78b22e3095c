"""The sidecar's upstream connection pool, judged by what a real upstream server sees.

Envoy pools upstream HTTP/1.1 connections per cluster and host, shared by every downstream
connection: two clients that each open their own connection to the sidecar are served over
ONE upstream connection (one TCP accept, one mTLS handshake at the server) as long as the
upstream keeps it alive; an upstream that closes (or says `Connection: close`) gets a fresh
connection next time, never a dead one. No namespaces: loopback, a real lab CA, real TLS.
"""

from __future__ import annotations

import asyncio
import io
import socket
from typing import Any

from netlab.dataplane import http1
from netlab.dataplane.ca import LabCA
from netlab.dataplane.envoy import istio_tls
from netlab.dataplane.envoy.accesslog import AccessLog
from netlab.dataplane.envoy.stats import IstioStats
from netlab.dataplane.identity import WorkloadCert
from netlab.dataplane.sidecar.context import Downstream, Env
from netlab.dataplane.sidecar.http_chain import HttpChain
from netlab.dataplane.sidecar.upstream import Connector
from netlab import snapshot, xds

FQDN = "prometheus.monitoring.svc.cluster.local"
VIP = "10.96.0.20"
SAN = "spiffe://cluster.local/ns/monitoring/sa/prometheus"


class _Certs:
    def __init__(self, ca: LabCA) -> None:
        self.ca = ca
        self.issued: dict[tuple[str, str], WorkloadCert] = {}

    async def get(self, ns: str, sa: str) -> WorkloadCert:
        return self.issued.setdefault((ns, sa), self.ca.issue_workload(ns, sa))


def _snap(port: int, transport: str) -> xds.SidecarSnapshot:
    cluster = xds.Cluster(
        xds.outbound_cluster_name(9090, FQDN), "EDS", "outbound", FQDN, 9090, "HTTP",
        endpoints=(xds.LbEndpoint("127.0.0.1", port, "monitoring/prometheus-0", "prometheus",
                                  "istio" if transport == "mtls" else "disabled", False,
                                  transport),),  # type: ignore[arg-type]
        tls=xds.UpstreamTls(xds.outbound_sni(9090, FQDN), xds.CLIENT_TCP_ALPNS, (SAN,)),
        services=(xds.ServiceRef(FQDN, "prometheus", "monitoring"),), connect_timeout_ms=2000)
    vh = xds.VirtualHost(xds.vhost_name(FQDN, 9090), (FQDN, "prometheus.monitoring", VIP),
                         (xds.Route("default", cluster.name, retry_policy=xds.RetryPolicy()),))
    pod = snapshot.Workload("grafana", "curl-0", "curl", deployment="curl",
                            labels={"app": "curl"}, ip="127.0.0.1")
    return xds.SidecarSnapshot(
        workload=pod, node="n1", trust_domain="cluster.local", capture="redirect", workdir="/none",
        ca=snapshot.CertAuthority("https://127.0.0.1:1", "/none", "/none"),
        bootstrap=snapshot.Bootstrap("/none", "/none"), workloads=(pod,),
        route_configs=(xds.RouteConfiguration("9090", (vh,)),), clusters=(cluster,))


async def _client_request(env: Env) -> tuple[http1.Response, str]:
    """One downstream connection, one request, closed: (response, its access-log line)."""
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    hcm = xds.HttpConnectionManager("outbound_0.0.0.0_9090", rds="9090")
    down = Downstream(rb, wb, "outbound", (VIP, 9090), ("127.0.0.1", 40000))
    chain = asyncio.create_task(HttpChain(env, down, hcm).serve())
    client = http1.ClientConnection(ra, wa)
    await client.send_request(http1.Request("GET", "/", [("Host", "prometheus.monitoring")]))
    resp = await client.read_response()
    wa.close()
    await asyncio.wait_for(chain, 5)
    log = env.access_log.stream.getvalue().splitlines()  # type: ignore[union-attr]
    return resp, log[-1]


def _upstream_local(line: str) -> str:
    """%UPSTREAM_LOCAL_ADDRESS%: the field after the cluster name in the TEXT line."""
    fields = line.split()
    return fields[fields.index(xds.outbound_cluster_name(9090, FQDN)) + 1]


def _run(tmp_path: Any, transport: str, upstream: str = "keep-alive"
         ) -> tuple[int, list[http1.Response], list[str]]:
    """Three downstream connections in turn; returns (connections the upstream accepted,
    the responses, the upstream local addresses the access log names).

    `upstream`: "keep-alive"; "close" answers with `Connection: close`; "hang-up" answers
    as keep-alive, then closes the connection anyway (an idle timeout on the server)."""
    async def go() -> tuple[int, list[http1.Response], list[str]]:
        ca = LabCA(tmp_path)
        accepted = 0
        hang_up = asyncio.Event()  # hang-up: the server's idle timeout fires

        async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            conn = http1.ServerConnection(r, w)
            try:
                while (req := await conn.read_request()) is not None:
                    again = await conn.send_response(http1.Response(200, body=req.target.encode()),
                                                     close=upstream == "close")
                    if not again:
                        break
                    if upstream == "hang-up":
                        await hang_up.wait()
                        break
            except (http1.HttpError, ConnectionError):
                pass
            w.close()

        ctx = istio_tls.server_context(ca.issue_workload("monitoring", "prometheus"),
                                       istio_tls.SERVER_ALPN_HTTP) if transport == "mtls" else None
        srv = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
        port = srv.sockets[0].getsockname()[1]
        snap = _snap(port, transport)
        env = Env(snap, Connector(snap, _Certs(ca)), IstioStats(), AccessLog(io.StringIO()))  # type: ignore[arg-type]
        responses, locals_ = [], []
        for _ in range(3):
            resp, line = await _client_request(env)
            responses.append(resp)
            locals_.append(_upstream_local(line))
            if upstream == "hang-up":  # while our connection idles in the pool
                hang_up.set()
                async with asyncio.timeout(5):  # until its FIN has reached the idle connection
                    while any(p.alive() for p in env.http_pool.connections()):
                        await asyncio.sleep(0.001)
                hang_up.clear()
        env.http_pool.close()
        srv.close()
        return accepted, responses, locals_
    return asyncio.run(go())


def test_downstream_connections_share_one_mtls_upstream_connection(tmp_path: Any) -> None:
    accepted, responses, locals_ = _run(tmp_path, "mtls")
    assert [r.status for r in responses] == [200, 200, 200]
    assert accepted == 1  # one TCP connection, one handshake at the server for three clients
    assert len(set(locals_)) == 1  # and every log line names that same upstream connection


def test_connection_close_is_not_reused(tmp_path: Any) -> None:
    accepted, responses, locals_ = _run(tmp_path, "plaintext", "close")
    assert [r.status for r in responses] == [200, 200, 200]
    assert accepted == 3
    assert len(set(locals_)) == 3


def test_an_upstream_that_hung_up_while_idle_is_not_reused(tmp_path: Any) -> None:
    accepted, responses, locals_ = _run(tmp_path, "mtls", "hang-up")
    assert [r.status for r in responses] == [200, 200, 200]  # never a 503 from a dead connection
    assert accepted == 3
    assert len(set(locals_)) == 3


def test_plaintext_upstream_is_pooled_too(tmp_path: Any) -> None:
    accepted, responses, _ = _run(tmp_path, "plaintext")
    assert [r.status for r in responses] == [200, 200, 200]
    assert accepted == 1
