"""HBONE over loopback: CONNECT semantics, flow control, half-close, pooling, TLS identity checks.

No root: everything listens on 127.0.0.1 with ephemeral ports.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
from cryptography import x509

from netlab.dataplane import identity as ident
from netlab.dataplane import tlsutil
from netlab.dataplane.ca import CAServer, CertClient, LabCA
from netlab.dataplane.hbone import HboneError, HbonePool, HboneServer, make_headers, parse_authority


def run(coro: Awaitable[object], timeout: float = 60) -> object:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def listening_socket() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while data := await r.read(1 << 16):
        w.write(data)
        await w.drain()
    w.close()


class Lab:
    """A CA, a server workload with an HBONE listener, and a client workload's pool."""

    def __init__(self, tmp: Path) -> None:
        self.ca = LabCA(tmp / "ca")
        self.server_cert = self.ca.issue_workload("default", "server")
        self.client_cert = self.ca.issue_workload("default", "client")
        self.server_id = str(self.server_cert.identity)
        self.client_id = str(self.client_cert.identity)
        self.seen: list[tuple[str, dict[str, str], str, tuple[str, int]]] = []
        self.upstream_port = 0
        self.decision: int | None = None  # a status the handler answers instead of connecting

    async def handler(self, authority: str, headers: dict[str, str], peer: str,
                      addr: tuple[str, int]) -> int | tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.seen.append((authority, headers, peer, addr))
        if self.decision is not None:
            return self.decision
        host, port = parse_authority(authority)  # type: ignore[misc]
        return await asyncio.open_connection(host, port, limit=1 << 20)


@asynccontextmanager
async def lab(tmp: Path, upstream: Callable[..., Awaitable[None]] = echo, max_streams: int = 100,
              server_ctx: Callable[[], ssl.SSLContext] | None = None) -> AsyncIterator[tuple[Lab, HboneServer, HbonePool, tuple[str, int]]]:
    lb = Lab(tmp)
    up = await asyncio.start_server(upstream, "127.0.0.1", 0)
    lb.upstream_port = up.sockets[0].getsockname()[1]
    sctx = ident.server_context(lb.server_cert)
    server = HboneServer(server_ctx or (lambda: sctx), lb.handler)
    ls = listening_socket()
    await server.start(ls)
    cctx = ident.client_context(lb.client_cert)
    pool = HbonePool(lambda src: cctx, max_streams=max_streams)
    try:
        yield lb, server, pool, ls.getsockname()
    finally:
        await pool.close()
        await server.close()
        up.close()


def test_parse_authority() -> None:
    assert parse_authority("10.0.0.1:80") == ("10.0.0.1", 80)
    assert parse_authority("[fd00::1]:8080") == ("fd00::1", 8080)
    for bad in (None, "", "10.0.0.1", "web:80", "10.0.0.1:0", "10.0.0.1:70000", "fd00::1:80", "1.2.3.4:x"):
        assert parse_authority(bad) is None, bad


def test_echo_round_trip_and_headers(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, pool, addr):
            hdrs = make_headers(forwarded_for=("10.1.0.5", 40000),
                                baggage={"k8s.namespace.name": "default"}, traceparent="00-ab-cd-01")
            st = await pool.connect(addr, f"127.0.0.1:{lb.upstream_port}", lb.client_id, lb.server_id, hdrs)
            assert st.status == 200
            await st.write(b"ping")
            assert await st.readexactly(4) == b"ping"
            st.write_eof()
            assert await st.read() == b""
            await asyncio.wait_for(st.wait_closed(), 5)
            authority, headers, peer, _ = lb.seen[0]
            assert authority == f"127.0.0.1:{lb.upstream_port}"
            assert headers == {"forwarded": 'for="10.1.0.5:40000"',
                               "baggage": "k8s.namespace.name=default", "traceparent": "00-ab-cd-01"}
            assert peer == lb.client_id
    run(main())


def test_ten_mib_each_way_with_integrity(tmp_path: Path) -> None:
    """Larger than both h2 windows, so it only passes if WINDOW_UPDATEs flow both ways."""
    payload = os.urandom(10 << 20)

    async def main() -> None:
        async with lab(tmp_path) as (lb, server, pool, addr):
            st = await pool.connect(addr, f"127.0.0.1:{lb.upstream_port}", lb.client_id, lb.server_id, {})

            async def send() -> None:
                view = memoryview(payload)
                for off in range(0, len(payload), 300_000):  # odd size: not frame aligned
                    await st.write(view[off:off + 300_000])
                st.write_eof()

            async def receive() -> bytes:
                h, n = hashlib.sha256(), 0
                while data := await st.read(1 << 20):
                    h.update(data)
                    n += len(data)
                assert n == len(payload)
                return h.digest()

            _, digest = await asyncio.gather(send(), receive())
            assert digest == hashlib.sha256(payload).digest()
    run(main(), timeout=120)


def test_half_close_keeps_the_other_direction(tmp_path: Path) -> None:
    """Client EOF reaches the app as TCP FIN; the app's reply still comes back afterwards."""
    async def count_then_reply(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        n = len(await r.read())  # until EOF: only arrives if the relay shut its write side
        await asyncio.sleep(0.2)
        w.write(f"got {n} bytes".encode() + b"x" * 100_000)
        await w.drain()
        w.close()

    async def main() -> None:
        async with lab(tmp_path, upstream=count_then_reply) as (lb, server, pool, addr):
            st = await pool.connect(addr, f"127.0.0.1:{lb.upstream_port}", lb.client_id, lb.server_id, {})
            await st.write(b"a" * 12345)
            st.write_eof()
            data = b""
            while chunk := await st.read():
                data += chunk
            assert data == b"got 12345 bytes" + b"x" * 100_000
    run(main())


@pytest.mark.parametrize("authority", ["not-an-ip:80", "127.0.0.1", "127.0.0.1:99999"])
def test_bad_authority_is_400(tmp_path: Path, authority: str) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, pool, addr):
            with pytest.raises(HboneError) as e:
                await pool.connect(addr, authority, lb.client_id, lb.server_id, {})
            assert e.value.status == 400
            assert lb.seen == []  # never reached the handler
    run(main())


def test_bad_method_is_400(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, pool, addr):
            conn = await pool._dial(addr, lb.client_id, lb.server_id)
            st = conn.open_stream([(":method", "GET"), (":authority", "127.0.0.1:80"),
                                   (":scheme", "https"), (":path", "/")])
            assert await asyncio.wait_for(st._response, 5) == 400
            conn.close()
    run(main())


@pytest.mark.parametrize("status", [401, 503])
def test_handler_status_is_returned(tmp_path: Path, status: int) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, pool, addr):
            lb.decision = status
            with pytest.raises(HboneError) as e:
                await pool.connect(addr, "127.0.0.1:1", lb.client_id, lb.server_id, {})
            assert e.value.status == status
    run(main())


def test_refused_upstream_is_503(tmp_path: Path) -> None:
    closed = listening_socket()
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connect is refused

    async def main() -> None:
        async with lab(tmp_path) as (lb, server, pool, addr):
            with pytest.raises(HboneError) as e:
                await pool.connect(addr, f"127.0.0.1:{port}", lb.client_id, lb.server_id, {})
            assert e.value.status == 503
            # the pooled connection survives a failed stream
            st = await pool.connect(addr, f"127.0.0.1:{lb.upstream_port}", lb.client_id, lb.server_id, {})
            await st.write(b"ok")
            assert await st.readexactly(2) == b"ok"
            assert server.accepted == 1
    run(main())


def test_pool_reuses_one_connection(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, pool, addr):
            auth = f"127.0.0.1:{lb.upstream_port}"
            streams = await asyncio.gather(*(pool.connect(addr, auth, lb.client_id, lb.server_id, {})
                                             for _ in range(8)))
            for i, st in enumerate(streams):
                await st.write(bytes([i]) * 10)
            for i, st in enumerate(streams):
                assert await st.readexactly(10) == bytes([i]) * 10
            for st in streams:
                st.close()
            st = await pool.connect(addr, auth, lb.client_id, lb.server_id, {})  # after closing: reused too
            assert server.accepted == 1 and pool.dialled == 1 and pool.connections() == 1
    run(main())


def test_pool_opens_another_connection_past_max_streams(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path, max_streams=2) as (lb, server, pool, addr):
            auth = f"127.0.0.1:{lb.upstream_port}"
            streams = [await pool.connect(addr, auth, lb.client_id, lb.server_id, {}) for _ in range(5)]
            assert server.accepted == 3 and pool.dialled == 3
            for st in streams:
                st.close()
    run(main())


def test_server_identity_mismatch_is_rejected(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, pool, addr):
            wrong = "spiffe://cluster.local/ns/default/sa/someone-else"
            with pytest.raises(ident.IdentityMismatch, match="server identity mismatch"):
                await pool.connect(addr, f"127.0.0.1:{lb.upstream_port}", lb.client_id, wrong, {})
            assert lb.seen == []
    run(main())


def test_client_without_certificate_fails(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, _, addr):
            bare = tlsutil.mesh_client_context(None, None, lb.ca.root_pem, "")
            pool = HbonePool(lambda src: bare)
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await pool.connect(addr, f"127.0.0.1:{lb.upstream_port}", lb.client_id, lb.server_id, {})
            assert server.accepted == 0 and server.rejected == 1
            assert lb.seen == []
            await pool.close()
    run(main())


def test_client_from_another_trust_domain_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, _, addr):
            foreign = LabCA(tmp_path / "ca", trust_domain="other.local").issue_workload("default", "client")
            ctx = ident.client_context(foreign)
            pool = HbonePool(lambda src: ctx)
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await pool.connect(addr, f"127.0.0.1:{lb.upstream_port}", str(foreign.identity),
                                   lb.server_id, {})
            assert server.rejected == 1 and lb.seen == []
            await pool.close()
    run(main())


def test_ztunnel_identity_is_never_a_workload_source(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, pool, addr):
            with pytest.raises(ident.IdentityError):
                await pool.connect(addr, "127.0.0.1:1",
                                   "spiffe://cluster.local/ns/istio-system/sa/ztunnel", lb.server_id, {})
    run(main())


def test_sslkeylogfile_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))

    async def main() -> None:
        async with lab(tmp_path) as (lb, server, pool, addr):
            st = await pool.connect(addr, f"127.0.0.1:{lb.upstream_port}", lb.client_id, lb.server_id, {})
            st.close()
    run(main())
    assert "CLIENT_TRAFFIC_SECRET_0" in keylog.read_text()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_openssl_s_client_sees_tls13_h2_and_spiffe_san(tmp_path: Path) -> None:
    async def s_client(addr: tuple[str, int], *extra: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-connect", f"{addr[0]}:{addr[1]}", "-alpn", "h2", "-noservername",
            "-CAfile", str(tmp_path / "ca" / "root-cert.pem"), "-showcerts", *extra,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        return out.decode(errors="replace")

    async def main() -> None:
        async with lab(tmp_path) as (lb, server, pool, addr):
            (tmp_path / "c.pem").write_bytes(lb.client_cert.cert_pem)
            (tmp_path / "k.pem").write_bytes(lb.client_cert.key_pem)
            out = await s_client(addr, "-cert", str(tmp_path / "c.pem"), "-key", str(tmp_path / "k.pem"))
            assert "TLSv1.3" in out, out
            assert re.search(r"ALPN protocol: h2\b", out), out
            assert "Verify return code: 0 (ok)" in out, out
            pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
            assert pem is not None
            leaf = x509.load_pem_x509_certificate(pem.group(0).encode())
            assert ident.uri_sans(leaf) == [lb.server_id]
            for _ in range(50):
                if server.accepted == 1:
                    break
                await asyncio.sleep(0.05)
            assert server.accepted == 1

            out = await s_client(addr, "-ign_eof")  # no client cert: wait for the server's verdict
            assert re.search(r"alert|error", out, re.I), out
            for _ in range(50):
                if server.rejected == 1:
                    break
                await asyncio.sleep(0.05)
            assert server.rejected == 1 and server.accepted == 1
    run(main())


def test_rotation_at_half_life_keeps_live_stream(tmp_path: Path) -> None:
    """TTL 4 s: the cert rotates at ~2 s; a stream opened before keeps flowing past expiry."""
    ca = LabCA(tmp_path / "ca")
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"node-1": [["default", "server"], ["default", "client"]]}))

    async def main() -> None:
        ca_srv = CAServer(ca, pods)
        host, port = await ca_srv.start("127.0.0.1", 0)
        boot_cert, boot_key = ca.issue_bootstrap("node-1")
        client = CertClient(f"https://{host}:{port}", boot_cert, boot_key, ca.root_pem, ttl_seconds=4)
        async with ident.CertManager(client.fetch) as mgr:
            mgr.prefetch("default", "server")
            up = await asyncio.start_server(echo, "127.0.0.1", 0)
            server = HboneServer(lambda: mgr.server_context("default", "server"),
                                 lambda a, h, p, ad: asyncio.open_connection(*parse_authority(a)))  # type: ignore[misc]
            ls = listening_socket()
            await server.start(ls)
            pool = HbonePool(lambda src: mgr.client_context(*ns_sa(src)))
            src, dst = str(ca.identity("default", "client")), str(ca.identity("default", "server"))
            auth = f"127.0.0.1:{up.sockets[0].getsockname()[1]}"
            st = await pool.connect(ls.getsockname(), auth, src, dst, {})
            first = mgr.current("default", "server")
            assert first is not None
            certs = {first.serial: first}
            deadline = time.time() + 5.5  # past the first cert's expiry
            i = 0
            while time.time() < deadline:
                msg = f"tick {i}".encode()
                await st.write(msg)
                assert await st.readexactly(len(msg)) == msg
                i += 1
                cur = mgr.current("default", "server")
                assert cur is not None
                certs.setdefault(cur.serial, cur)
                await asyncio.sleep(0.1)
            assert first.expired() and i > 30
            seq = sorted(certs.values(), key=lambda c: c.not_before)
            assert len(seq) >= 2, "no rotation happened"
            second = seq[1]
            # refreshed at half-life (x509 times have 1 s resolution), not at expiry
            assert abs(second.not_before.timestamp() - first.refresh_at) <= 1.0
            # a new connection (fresh pool) handshakes with the new cert
            pool2 = HbonePool(lambda src: mgr.client_context(*ns_sa(src)))
            st2 = await pool2.connect(ls.getsockname(), auth, src, dst, {})
            await st2.write(b"new")
            assert await st2.readexactly(3) == b"new"
            assert server.accepted == 2
            for p in (pool, pool2):
                await p.close()
            await server.close()
            up.close()
        await ca_srv.close()
    run(main(), timeout=60)


def ns_sa(spiffe: str) -> tuple[str, str]:
    i = ident.Identity.parse(spiffe)
    return i.namespace, i.service_account


@pytest.mark.skipif(not os.environ.get("NETLAB_BENCH"), reason="benchmark: set NETLAB_BENCH=1")
def test_throughput_100mib_upload(tmp_path: Path) -> None:
    """Same-process loopback number for a quick look; the report uses a two-process bench."""
    n = 100 << 20

    async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got = 0
        while data := await r.read(1 << 20):
            got += len(data)
        w.write(str(got).encode())
        await w.drain()
        w.close()

    async def main() -> None:
        async with lab(tmp_path, upstream=sink) as (lb, server, pool, addr):
            chunk = os.urandom(1 << 20)
            t = time.perf_counter()
            st = await pool.connect(addr, f"127.0.0.1:{lb.upstream_port}", lb.client_id, lb.server_id, {})
            for _ in range(n >> 20):
                await st.write(chunk)
            st.write_eof()
            assert int(await st.read()) == n
            print(f"HBONE upload (one process): {n / (time.perf_counter() - t) / 1e6:.0f} MB/s")
    run(main(), timeout=300)


def test_node_bootstrap_certificate_is_refused_as_a_client(tmp_path: Path) -> None:
    """The bootstrap cert is signed by the lab CA but names a node, not one workload."""
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, _, addr):
            cert, key = lb.ca.issue_bootstrap("node-1")
            ctx = tlsutil.mesh_client_context(cert, key, lb.ca.root_pem, "")
            # TLS 1.3: the client's handshake ends before the server checks its certificate,
            # so the refusal shows as the connection closing under the first read.
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                r, w = await asyncio.open_connection(*addr, ssl=ctx)
                w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                await r.readexactly(1)
            assert server.accepted == 0 and server.rejected == 1 and lb.seen == []
    run(main())


def test_certificate_with_two_spiffe_ids_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, _, addr):
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ec
            key = ec.generate_private_key(ec.SECP256R1())
            cert = lb.ca.sign(key.public_key(), [lb.client_id, "spiffe://cluster.local/ns/default/sa/other"], 3600)
            key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            ctx = tlsutil.mesh_client_context(cert, key_pem, lb.ca.root_pem, "")
            pool = HbonePool(lambda src: ctx)
            with pytest.raises((ssl.SSLError, ConnectionError, HboneError)):
                await pool.connect(addr, f"127.0.0.1:{lb.upstream_port}", lb.client_id, lb.server_id, {})
            await pool.close()
            assert server.rejected == 1 and lb.seen == []
    run(main())


def test_workload_identity_rules() -> None:
    ca = LabCA(Path(os.environ.get("TMPDIR", "/tmp")) / f"nl-ca-{os.getpid()}")
    try:
        good = x509.load_pem_x509_certificate(ca.issue_workload("default", "client").cert_pem)
        assert str(ident.workload_identity(good, "cluster.local")) == "spiffe://cluster.local/ns/default/sa/client"
        with pytest.raises(ident.IdentityError, match="trust domain"):
            ident.workload_identity(good, "other.local")
        boot = x509.load_pem_x509_certificate(ca.issue_bootstrap("node-1")[0])
        with pytest.raises(ident.IdentityError, match="2 URI SANs"):
            ident.workload_identity(boot, "cluster.local")
    finally:
        shutil.rmtree(ca.dir, ignore_errors=True)


def test_connection_without_a_stream_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    """An authenticated client that opens no stream is sent GOAWAY and closed; one that
    keeps using its connection is not."""
    async def main() -> None:
        lb = Lab(tmp_path)
        sctx = ident.server_context(lb.server_cert)
        server = HboneServer(lambda: sctx, lb.handler, idle_timeout=0.3)
        ls = listening_socket()
        await server.start(ls)
        up = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = up.sockets[0].getsockname()[1]
        cctx = ident.client_context(lb.client_cert)
        busy = HbonePool(lambda src: cctx, idle_timeout=0)  # the client never releases on its own
        try:
            st = await busy.connect(ls.getsockname(), f"127.0.0.1:{port}", lb.client_id, lb.server_id, {})
            st.close()  # the connection is now authenticated and carries no stream
            conn = next(c for conns in busy._pools.values() for c in conns)
            await asyncio.wait_for(conn.closed.wait(), 10)
            assert conn.goaway, "closed by the server with a GOAWAY"
            assert server.idle_closed == 1
            # In use all along: a stream open across several timeouts keeps it.
            st = await busy.connect(ls.getsockname(), f"127.0.0.1:{port}", lb.client_id, lb.server_id, {})
            for _ in range(4):
                await st.write(b"ping")
                assert await st.read(4) == b"ping"
                await asyncio.sleep(0.3)  # the test's clock: the idle timer must not fire
            assert server.idle_closed == 1
            st.close()
        finally:
            await busy.close()
            await server.close()
            up.close()
    run(main())
