"""A destination ztunnel's first tunnels, while its workload certificate is still coming.

Why: ztunnel and the lab CA start together, so a ztunnel's first fetch can be refused
(the CA is not listening yet). A tunnel that arrived before the retry used to hang
until the client's 10 s timeout: the HBONE server made a plain transport, waited for
the certificate, and only then layered TLS on it, by which time the client's
ClientHello had already been read by the plain protocol (Python 3.11 ignores a
`pause_reading()` in `connection_made`, CPython gh-103607). These tests judge what a
client sees: a tunnel answered 200 with bytes echoed, or a prompt refusal with the
reason in the server's log, never a wait for its own timeout.

No root: loopback, ephemeral ports, the lab CA's signing code for the certificate.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from netlab.dataplane import identity as ident
from netlab.dataplane.ca import CAError, LabCA
from netlab.dataplane.hbone import HbonePool, HboneServer
from netlab.dataplane.hbone.wire import parse_authority

NS, SA = "default", "server"
# Longer than any test: only a fetch a waiter triggers can answer it, never the retry timer.
RETRY = 600.0
# The client's bound on dial + handshake. A stalled handshake shows up as this timeout.
CLIENT_TIMEOUT = 5.0


async def _echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while data := await r.read(1 << 16):
        w.write(data)
        await w.drain()
    w.close()


class FlakyCA:
    """A fetch that fails `failures` times (as the CA not serving yet), then issues."""

    def __init__(self, ca: LabCA, failures: int, error: Exception) -> None:
        self.ca, self.failures, self.error = ca, failures, error
        self.calls = 0
        self.failed = asyncio.Event()

    async def fetch(self, namespace: str, service_account: str) -> ident.WorkloadCert:
        self.calls += 1
        await asyncio.sleep(0)  # a real fetch is I/O: the caller is suspended meanwhile
        if self.calls <= self.failures:
            self.failed.set()
            raise self.error
        return self.ca.issue_workload(namespace, service_account)


async def _setup(tmp: Path, flaky_failures: int, error: Exception):  # type: ignore[no-untyped-def]
    ca = LabCA(tmp / "ca")
    client_cert = ca.issue_workload("default", "client")
    flaky = FlakyCA(ca, flaky_failures, error)
    mgr = ident.CertManager(flaky.fetch, retry_seconds=RETRY)
    mgr.start()
    mgr.prefetch(NS, SA)  # what ztunnel does for each local pod at start
    upstream = await asyncio.start_server(_echo, "127.0.0.1", 0)
    server = HboneServer(lambda: mgr.server_context(NS, SA), _connect_upstream,
                         trust_domain=ca.trust_domain)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    await server.start(listener)
    cctx = ident.client_context(client_cert)
    pool = HbonePool(lambda _src: cctx, connect_timeout=CLIENT_TIMEOUT)
    return ca, client_cert, flaky, mgr, upstream, server, listener.getsockname(), pool


async def _connect_upstream(authority: str, headers: dict[str, str], peer: str,
                            addr: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = parse_authority(authority)  # type: ignore[misc]
    return await asyncio.open_connection(host, port)


def test_tunnel_in_the_retry_gap_is_served_once_the_ca_answers(tmp_path: Path) -> None:
    async def main() -> None:
        ca, client_cert, flaky, mgr, upstream, server, addr, pool = await _setup(
            tmp_path, 1, ConnectionRefusedError(111, "Connect call failed (CA not serving yet)"))
        try:
            await asyncio.wait_for(flaky.failed.wait(), 5)
            assert mgr.current(NS, SA) is None  # the prefetch failed; the retry is far away
            server_id = str(ca.identity(NS, SA))
            up_port = upstream.sockets[0].getsockname()[1]
            stream = await pool.connect(addr, f"127.0.0.1:{up_port}", str(client_cert.identity),
                                        server_id, {})
            assert stream.status == 200
            await stream.write(b"hello")
            assert await asyncio.wait_for(stream.readexactly(5), 5) == b"hello"
            stream.write_eof()
            assert flaky.calls == 2  # the refused prefetch, then the fetch the tunnel waited on
            assert server.accepted == 1 and server.rejected == 0
        finally:
            await pool.close()
            await server.close()
            await mgr.close()
            upstream.close()

    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.mark.parametrize("error", [ConnectionRefusedError(111, "Connect call failed"),
                                   CAError(503, "not serving yet")])
def test_tunnel_without_a_certificate_is_refused_at_once_with_the_reason_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, error: Exception) -> None:
    """The CA keeps failing: the client is closed on, not left to its timeout; the log says why."""
    async def main() -> None:
        ca, client_cert, flaky, mgr, upstream, server, addr, pool = await _setup(tmp_path, 99, error)
        try:
            await asyncio.wait_for(flaky.failed.wait(), 5)
            up_port = upstream.sockets[0].getsockname()[1]
            with pytest.raises(Exception) as got:
                await pool.connect(addr, f"127.0.0.1:{up_port}", str(client_cert.identity),
                                   str(ca.identity(NS, SA)), {})
            assert not isinstance(got.value, asyncio.TimeoutError), "the server never answered"
            assert server.rejected == 1
        finally:
            await pool.close()
            await server.close()
            await mgr.close()
            upstream.close()

    with caplog.at_level(logging.INFO, logger="netlab.dataplane.hbone"):
        asyncio.run(asyncio.wait_for(main(), 60))
    refusals = [r.getMessage() for r in caplog.records if "HBONE handshake from" in r.getMessage()]
    assert refusals and str(error) in refusals[0], caplog.text


def test_forgotten_identity_answers_its_waiters(tmp_path: Path) -> None:
    async def main() -> None:
        started = asyncio.Event()
        never = asyncio.Event()

        async def stuck(namespace: str, service_account: str) -> ident.WorkloadCert:
            started.set()
            await never.wait()
            raise AssertionError("unreachable")

        async with ident.CertManager(stuck, retry_seconds=RETRY) as mgr:
            waiter = asyncio.ensure_future(mgr.get(NS, SA))
            await asyncio.wait_for(started.wait(), 5)
            mgr.forget(NS, SA)
            with pytest.raises(ident.IdentityError, match="forgotten"):
                await asyncio.wait_for(waiter, 5)

    asyncio.run(asyncio.wait_for(main(), 60))
