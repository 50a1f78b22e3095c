"""http-echo: answer every request with 200 and a JSON description of what arrived.

The peer is read from the socket (getpeername), never from headers: labs use it to
prove whether the mesh preserved the client's source IP.
"""

from __future__ import annotations

import asyncio
import json

from netlab.dataplane.apps import _http
from netlab.dataplane.apps._log import addr, log
from netlab.dataplane.apps._serve import Handler, Listeners


def describe(req: _http.Message, peer: str, local: str, name: str) -> dict[str, object]:
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
        while True:
            try:
                req = await _http.read_request(reader, writer)
            except _http.BadMessage as e:
                writer.write(_http.encode_response(400, [], b"", keep_alive=False))
                log(image="http-echo", server=name, peer=peer, local=local, status=400,
                    error=str(e))
                break
            if req is None:
                break
            body = json.dumps(describe(req, peer, local, name)).encode() + b"\n"
            keep = req.keep_alive()
            writer.write(_http.encode_response(
                200, [("Content-Type", "application/json"), ("X-Echo-Peer", peer)], body,
                keep_alive=keep, version=req.version, head_only=req.method == "HEAD"))
            await writer.drain()
            log(image="http-echo", server=name, peer=peer, local=local, method=req.method,
                host=req.header("host") or "", path=req.target, status=200,
                request_bytes=len(req.body))
            if not keep:
                break
        await writer.drain()
    return handle


async def serve(ports: list[int], name: str, host: str = "0.0.0.0") -> Listeners:
    listeners = Listeners()
    await listeners.listen(handler(name), host, ports)
    return listeners
