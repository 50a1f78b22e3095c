"""One lifecycle for every process netlab starts: apps, DNS, the CA, the steal agent, proxies.

The order is the point: stop signals first (a SIGTERM sent right after "ready" must
never meet Python's default handler), then start, then say ready on the ready pipe
(`netlab.readiness`), serve until SIGTERM or SIGINT, and close what start opened.
A process that fails to start exits with an error before saying ready, so its
starter fails at once and shows the log.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Awaitable, Callable, Mapping, Protocol, TypeVar

from netlab import readiness


class Closeable(Protocol):
    async def close(self) -> None: ...


S = TypeVar("S", bound=Closeable)


def stop_event(extra: Mapping[int, Callable[[], None]] | None = None) -> asyncio.Event:
    """An event set on SIGTERM or SIGINT, plus handlers for `extra` signals (SIGHUP...)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for sig, handler in (extra or {}).items():
        loop.add_signal_handler(sig, handler)
    return stop


async def serve(start: Callable[[], Awaitable[S]], *,
                on_ready: Callable[[S], None] | None = None,
                signals: Mapping[int, Callable[[], None]] | None = None) -> None:
    """Signals, start, announce, serve until stopped, close.

    `on_ready` runs just before the ready pipe is written: the process' own "ready"
    log line, which labs and tests read as evidence.
    """
    stop = stop_event(signals)
    service = await start()
    try:
        if on_ready is not None:
            on_ready(service)
        readiness.announce()
        await stop.wait()
    finally:
        await service.close()


def run(start: Callable[[], Awaitable[S]], *,
        on_ready: Callable[[S], None] | None = None,
        signals: Mapping[int, Callable[[], None]] | None = None) -> None:
    """`serve` on a fresh event loop: the whole life of a process' main()."""
    asyncio.run(serve(start, on_ready=on_ready, signals=signals))
