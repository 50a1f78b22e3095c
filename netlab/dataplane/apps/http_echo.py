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
