"""An image's listeners, run through the one process lifecycle (`dataplane.proxy.lifecycle`).

Python 3.11's Server.wait_closed() does not wait for (or end) open connections, and
an idle keep-alive connection would otherwise outlive the stop; so every connection
handler is tracked and cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from netlab.dataplane.apps._log import addr, log
from netlab.dataplane.proxy import lifecycle

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Listeners:
    """Servers for one image, with their live connections."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self._conns: set[asyncio.Task[None]] = set()

    def _tracked(self, handler: Handler) -> Handler:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._conns.add(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                pass  # the peer went away; the handler has logged what it could
            finally:
                self._conns.discard(task)
                writer.close()
        return run

    async def listen(self, handler: Handler, host: str, ports: list[int]) -> None:
        for port in ports:
            server = await asyncio.start_server(self._tracked(handler), host, port,
                                                reuse_address=True)
            self.servers.append(server)

    def addresses(self) -> list[str]:
        return [addr(s.getsockname()) for srv in self.servers for s in srv.sockets]

    def port(self, i: int = 0) -> int:
        """The bound port of listener i (tests listen on port 0)."""
        return self.servers[i].sockets[0].getsockname()[1]

    async def close(self) -> None:
        for srv in self.servers:
            srv.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=2)
        for srv in self.servers:
            await srv.wait_closed()


async def run(image: str, start: Callable[[], Awaitable[Listeners]] | None) -> None:
    """Listen (unless the image has no server), say ready, serve until stopped.

    The JSON ready line is the app's own evidence for labs; the ready pipe is what
    `netlab up` waits on.
    """
    async def listen() -> Listeners:
        return await start() if start else Listeners()

    await lifecycle.serve(listen, on_ready=lambda ls: log(ready=True, image=image,
                                                          listen=ls.addresses()))
