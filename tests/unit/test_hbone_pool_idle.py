"""HBONE pool idle release (ztunnel's pool_unused_release_timeout) over loopback.

No root: reuses test_hbone's in-process CA, HBONE server and echo upstream. Each test
runs a pool of its own with a short `idle_timeout`, and watches the server's accepted
connection to see when the client really let it go.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from netlab.dataplane import identity as ident
from netlab.dataplane.hbone import H2Conn, HbonePool, HboneServer, HboneStream
from tests.unit.test_hbone import Lab, lab, run


def make_pool(lb: Lab, idle_timeout: float) -> HbonePool:
    cctx = ident.client_context(lb.client_cert)
    return HbonePool(lambda src: cctx, idle_timeout=idle_timeout)


async def tunnel(pool: HbonePool, lb: Lab, addr: tuple[str, int]) -> HboneStream:
    return await pool.connect(addr, f"127.0.0.1:{lb.upstream_port}", lb.client_id, lb.server_id, {})


async def round_trip(st: HboneStream, msg: bytes = b"ping") -> None:
    await st.write(msg)
    assert await asyncio.wait_for(st.readexactly(len(msg)), 5) == msg


async def finish(st: HboneStream) -> None:
    """End a tunnel cleanly, so the connection is left carrying no streams."""
    st.write_eof()
    assert await asyncio.wait_for(st.read(), 5) == b""
    await asyncio.wait_for(st.wait_closed(), 5)


def server_conn(server: HboneServer) -> H2Conn:
    conns = list(server._conns)
    assert len(conns) == 1, conns
    return conns[0]


def test_idle_connection_is_released_and_next_connect_dials_afresh(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, _, addr):
            pool = make_pool(lb, idle_timeout=0.3)
            try:
                st = await tunnel(pool, lb, addr)
                await round_trip(st)
                srv = server_conn(server)
                await finish(st)
                t0 = asyncio.get_running_loop().time()
                await asyncio.wait_for(srv.closed.wait(), 1.5)  # the server saw it end
                waited = asyncio.get_running_loop().time() - t0
                assert waited >= 0.25, f"closed after {waited:.2f}s, before the idle timeout"
                assert srv.goaway, "closed without a GOAWAY"
                assert server._conns == set()
                assert pool.connections() == 0
                assert pool._pools == {} and pool._locks == {} and pool._idle == {}
                sweeper = pool._sweeper
                assert sweeper is not None
                await asyncio.wait_for(sweeper, 1)  # nothing left to watch: it exits

                st = await tunnel(pool, lb, addr)
                await round_trip(st, b"again")
                assert pool.dialled == 2 and server.accepted == 2 and pool.connections() == 1
                st.close()
            finally:
                await pool.close()
            assert pool._sweeper is None and pool.connections() == 0
    run(main(), timeout=20)


def test_connection_with_a_long_lived_stream_is_kept(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, _, addr):
            pool = make_pool(lb, idle_timeout=0.2)
            try:
                st = await tunnel(pool, lb, addr)
                srv = server_conn(server)
                await asyncio.sleep(1.2)  # six timeouts with a quiet but open stream
                assert not srv.closed.is_set() and pool.connections() == 1
                await round_trip(st)  # the tunnel still works
                st2 = await tunnel(pool, lb, addr)  # and the connection is still pooled
                assert pool.dialled == 1 and server.accepted == 1
                await finish(st2)
                await finish(st)
                # the sweeper was running all along: now idle, the connection goes
                await asyncio.wait_for(srv.closed.wait(), 1.5)
                assert pool.connections() == 0
            finally:
                await pool.close()
    run(main(), timeout=20)


def test_short_tunnels_between_sweeps_count_as_use(tmp_path: Path) -> None:
    """Tunnels that open and finish between two sweeps still keep the connection alive."""
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, _, addr):
            pool = make_pool(lb, idle_timeout=0.3)
            try:
                loop = asyncio.get_running_loop()
                end = loop.time() + 1.2
                while loop.time() < end:
                    st = await tunnel(pool, lb, addr)
                    await round_trip(st)
                    await finish(st)
                    await asyncio.sleep(0.1)
                assert pool.dialled == 1 and server.accepted == 1
                await asyncio.wait_for(server_conn(server).closed.wait(), 1.5)
            finally:
                await pool.close()
    run(main(), timeout=20)


def test_idle_timeout_zero_never_closes(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, _, addr):
            pool = make_pool(lb, idle_timeout=0)
            try:
                st = await tunnel(pool, lb, addr)
                await round_trip(st)
                srv = server_conn(server)
                await finish(st)
                await asyncio.sleep(1.0)
                assert pool._sweeper is None
                assert not srv.closed.is_set() and pool.connections() == 1
                st = await tunnel(pool, lb, addr)
                await round_trip(st)
                assert pool.dialled == 1 and server.accepted == 1
                st.close()
            finally:
                await pool.close()
            await asyncio.wait_for(srv.closed.wait(), 5)
    run(main(), timeout=20)


def test_sweep_never_closes_under_a_connect_and_retired_key_is_retried(tmp_path: Path) -> None:
    """Drive `_sweep_once` by hand (the real sweeper sleeps 25 s here) to hit the race:
    a key whose lock is held is left alone; a connect queued on a lock the sweeper
    retired takes the fresh lock and dials, instead of picking the closing connection."""
    async def main() -> None:
        async with lab(tmp_path) as (lb, server, _, addr):
            pool = make_pool(lb, idle_timeout=100)
            try:
                loop = asyncio.get_running_loop()
                st = await tunnel(pool, lb, addr)
                await finish(st)
                srv = server_conn(server)
                (key,) = pool._locks
                lock = pool._locks[key]
                t0 = loop.time()
                pool._sweep_once(t0)  # first seen idle
                await lock.acquire()  # as a connect choosing a connection would
                pool._sweep_once(t0 + 1000)
                assert pool.connections() == 1 and pool._locks[key] is lock

                waiter = asyncio.ensure_future(tunnel(pool, lb, addr))
                await asyncio.sleep(0.05)
                assert not waiter.done()
                lock.release()  # the waiter is woken but has not run yet
                pool._sweep_once(t0 + 1000)
                assert key not in pool._locks and pool.connections() == 0
                st = await asyncio.wait_for(waiter, 5)
                await round_trip(st)
                assert pool.dialled == 2 and pool._locks[key] is not lock
                await asyncio.wait_for(srv.closed.wait(), 5)
                st.close()
            finally:
                await pool.close()
    run(main(), timeout=20)
