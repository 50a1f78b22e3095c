"""http-echo: answer every request with 200 and a JSON description of what arrived.

The peer is read from the socket (getpeername), never from headers: labs use it to
prove whether the mesh preserved the client's source IP.
"""

from __future__ import annotations

import asyncio
import json

from netlab.dataplane import http1
from netlab.dataplane.apps._log import addr, log
from netlab.dataplane.apps._serve import Handler, Listeners


def describe(req: http1.Request, peer: str, local: str, name: str) -> dict[str, object]:
    headers: dict[str, str] = {}
    for k, v in req.headers:
        k = k.lower()
        headers[k] = f"{headers[k]}, {v}" if k in headers else v
    return {"method": req.method, "host": req.header("host") or "", "path": req.target,
            "peer": peer, "local": local, "server": name, "headers": headers}


def handler(name: str) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = addr(writer.get_extra_info("peername"))
        local = addr(writer.get_extra_info("sockname"))

        async def respond(req: http1.Request) -> http1.Response:
            body = json.dumps(describe(req, peer, local, name)).encode() + b"\n"
            # Logged before the reply leaves, so the line exists once the client has it.
            log(image="http-echo", server=name, peer=peer, local=local, method=req.method,
                host=req.header("host") or "", path=req.target, status=200,
                request_bytes=req.body_size)
            return http1.Response(200, [("Content-Type", "application/json"),
                                        ("X-Echo-Peer", peer)], body)

        def bad(e: http1.HttpError) -> None:
            log(image="http-echo", server=name, peer=peer, local=local, status=e.status,
                error=str(e))

        # Bodies are counted, never echoed: no need to hold them.
        await http1.serve(reader, writer, respond, bad, keep_body=False)
    return handle


async def serve(ports: list[int], name: str, host: str = "0.0.0.0") -> Listeners:
    listeners = Listeners()
    await listeners.listen(handler(name), host, ports)
    return listeners


WARM_TIMEOUT = 5.0  # seconds: a rehearsal that hangs must not hold up the zygote


def warm() -> None:
    """For the process zygote: serve two requests on loopback, as a pod's server will.

    Python 3.11 specialises bytecode in place as it runs and counts references in the
    objects themselves, so the first request in each forked server would write to
    pages of asyncio, h11 and this module that it shares with the zygote: 1.2 MiB per
    server, measured. Served once before the fork, those writes happen once. The
    zygote runs this in a scratch network namespace of its own, with its output
    going nowhere (kernel/zygote.py, `_warm`).
    """
    async def rehearse() -> None:
        listeners = await serve([0], "warm", "127.0.0.1")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listeners.port())
            for close in (False, True):  # one kept-alive request, then one that closes
                writer.write(b"GET / HTTP/1.1\r\nHost: warm\r\n"
                             + (b"Connection: close\r\n" if close else b"") + b"\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
            await reader.read()  # the server's FIN
            writer.close()
            await writer.wait_closed()
        finally:
            await listeners.close()

    asyncio.run(asyncio.wait_for(rehearse(), WARM_TIMEOUT))
