"""tcp-echo: send back every byte; on the client's half-close, finish and close.

The optional prefix goes before each reply chunk so a lab can tell which backend
answered without parsing anything.
"""

from __future__ import annotations

import asyncio
import time

from netlab.dataplane.apps._log import addr, log
from netlab.dataplane.apps._serve import Handler, Listeners


def handler(prefix: bytes) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = addr(writer.get_extra_info("peername"))
        local = addr(writer.get_extra_info("sockname"))
        start = time.monotonic()
        bytes_in = bytes_out = 0
        end = "eof"
        try:
            while chunk := await reader.read(65536):
                bytes_in += len(chunk)
                writer.write(prefix + chunk)
                bytes_out += len(prefix) + len(chunk)
                await writer.drain()
        except ConnectionError as e:
            end = type(e).__name__
        finally:
            log(image="tcp-echo", peer=peer, local=local, bytes_in=bytes_in,
                bytes_out=bytes_out, end=end,
                duration_ms=round((time.monotonic() - start) * 1000, 1))
    return handle


async def serve(ports: list[int], prefix: str = "", host: str = "0.0.0.0") -> Listeners:
    listeners = Listeners()
    await listeners.listen(handler(prefix.encode()), host, ports)
    return listeners
