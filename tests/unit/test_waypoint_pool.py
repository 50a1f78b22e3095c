"""The waypoint's upstream keep-alive, judged by what a real HBONE server and a real HTTP
upstream behind it see.

Envoy keeps upstream HTTP/1.1 connections alive per cluster host; a waypoint's upstream
connection is one CONNECT through `connect_originate`. So three requests from one client
connection to one endpoint cross ONE HBONE stream (one CONNECT at the server, one accept at
the app) while the upstream keeps it alive; after `Connection: close`, or once the upstream
hung up while the connection idled, the next request gets a fresh stream, never a dead one.
No namespaces: loopback, a real lab CA, real TLS and HTTP/2 (tests/unit/test_hbone.py's lab).
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from netlab import mesh
from netlab.dataplane import http1
from netlab.dataplane.envoy.accesslog import AccessEntry, AccessLog
from netlab.dataplane.envoy.stats import IstioStats
from netlab.dataplane.waypoint import upstream
from netlab.dataplane.waypoint.context import Downstream, Env
from netlab.dataplane.waypoint.http_chain import HttpChain
from netlab.snapshot import Endpoint, Workload
from tests.unit.test_hbone import lab

FQDN = "echo.mesh.svc.cluster.local"


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> tuple[int, int, list[int]]:
    """Three requests on one downstream connection to one endpoint: (CONNECTs the HBONE
    server took, connections the app accepted, response codes).

    `mode`: "keep-alive"; "close" answers with `Connection: close`; "hang-up" answers as
    keep-alive, then closes while the connection idles (a server's idle timeout)."""
    async def go() -> tuple[int, int, list[int]]:
        accepted = 0
        hang_up = asyncio.Event()

        async def app(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            conn = http1.ServerConnection(r, w)
            try:
                while (req := await conn.read_request()) is not None:
                    if not await conn.send_response(http1.Response(200, body=req.target.encode()),
                                                    close=mode == "close"):
                        break
                    if mode == "hang-up":
                        await hang_up.wait()
                        break
            except (http1.HttpError, ConnectionError):
                pass
            w.close()

        async with lab(tmp_path, upstream=app) as (lb, _server, pool, addr):
            monkeypatch.setattr(mesh, "HBONE_PORT", addr[1])  # connect_originate's port override
            server_ns, server_sa = lb.server_id.split("/ns/")[1].split("/sa/")
            client_ns, client_sa = lb.client_id.split("/ns/")[1].split("/sa/")
            td = lb.server_id.removeprefix("spiffe://").split("/")[0]
            dst = Workload(server_ns, "echo-0", server_sa, deployment="echo", ip="127.0.0.1")
            me = Workload(client_ns, "waypoint-0", client_sa, deployment="waypoint")
            cfg: Any = SimpleNamespace(trust_domain=td, workload_by_ip=lambda _ip: None)
            env = Env(cfg, me, lb.client_id, pool, IstioStats(CollectorRegistry()), AccessLog(io.StringIO()))
            chain = HttpChain(env, Downstream(("127.0.0.1", 40000), lb.client_id, "10.96.0.1:80"), None)  # type: ignore[arg-type]
            picked = upstream.Picked(Endpoint(dst.key, "127.0.0.1", lb.upstream_port), dst)
            codes = []
            for i in range(3):
                resp = await chain._forward(http1.Request("GET", f"/{i}", [("host", FQDN)]),
                                            AccessEntry(time.time()), picked, FQDN, time.time())
                codes.append(resp.status)
                if mode == "hang-up":  # while our connection idles in the pool
                    hang_up.set()
                    async with asyncio.timeout(5):  # until the app's FIN has crossed the tunnel
                        while any(p.alive() for p in chain._pool.connections()):
                            await asyncio.sleep(0.001)
                    hang_up.clear()
            await chain.close()
            return len(lb.seen), accepted, codes
    return asyncio.run(asyncio.wait_for(go(), 60))


def test_one_hbone_stream_carries_every_request_while_the_upstream_keeps_it_alive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(tmp_path, monkeypatch, "keep-alive") == (1, 1, [200, 200, 200])


def test_connection_close_gets_a_fresh_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(tmp_path, monkeypatch, "close") == (3, 3, [200, 200, 200])


def test_an_upstream_that_hung_up_while_idle_is_not_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(tmp_path, monkeypatch, "hang-up") == (3, 3, [200, 200, 200])
