"""h2 with prior knowledge inside a tunnel: each stream becomes one `http1.Request`.

Why a converter and not a second chain: policy, routing and the upstream leg are the
same for both protocols, so an h2 stream is turned into the request the HTTP chain
already handles (`:authority` becomes Host), and its answer is sent back on the stream.
Streams are handled concurrently, as Envoy's HCM does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from netlab.dataplane import http1

log = logging.getLogger("waypoint")
READ = 64 * 1024
PROTOCOL = "HTTP/2"

Handle = Callable[[http1.Request, str], Awaitable[http1.Response]]


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handle: Handle) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    pending: dict[int, tuple[list[tuple[str, str]], list[bytes]]] = {}
    tasks: set[asyncio.Task[None]] = set()
    opened = asyncio.Event()  # set whenever the client grows a flow-control window

    async def answer(sid: int, head: list[tuple[str, str]], body: bytes) -> None:
        pseudo = {k: v for k, v in head if k.startswith(":")}
        headers = [(k, v) for k, v in head if not k.startswith(":")]
        if ":authority" in pseudo and not any(k == "host" for k, _ in headers):
            headers.insert(0, ("host", pseudo[":authority"]))
        req = http1.Request(method=pseudo.get(":method", "GET"), target=pseudo.get(":path", "/"),
                            headers=headers, body=body, body_size=len(body), http_version="2")
        resp = await handle(req, PROTOCOL)
        out = [(":status", str(resp.status))] + [(k.lower(), v) for k, v in resp.end_to_end()
                                                 if k.lower() != "content-length"]
        out.append(("content-length", str(len(resp.body))))
        try:
            conn.send_headers(sid, out, end_stream=not resp.body)
            if resp.body:
                await _send_body(conn, writer, sid, resp.body, opened)
            writer.write(conn.data_to_send())
            await writer.drain()
        except (h2.exceptions.ProtocolError, ConnectionError) as e:
            log.info("h2 stream %d: %s", sid, e)

    try:
        while data := await reader.read(READ):
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                log.info("h2 protocol error: %s", e)
                break
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    pending[ev.stream_id] = (list(ev.headers), [])  # type: ignore[arg-type]
                elif isinstance(ev, h2.events.DataReceived):
                    if ev.stream_id in pending:
                        pending[ev.stream_id][1].append(ev.data)
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in pending:
                    head, chunks = pending.pop(ev.stream_id)
                    t = asyncio.create_task(answer(ev.stream_id, head, b"".join(chunks)))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                    opened.set()
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    break
            writer.write(conn.data_to_send())
            await writer.drain()
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.write(conn.data_to_send())
        writer.close()


async def _send_body(conn: h2.connection.H2Connection, writer: asyncio.StreamWriter, sid: int,
                     body: bytes, opened: asyncio.Event) -> None:
    view = memoryview(body)
    while view:
        window = conn.local_flow_control_window(sid)
        if window <= 0:  # wait for the client's WINDOW_UPDATE, read by the serve loop
            writer.write(conn.data_to_send())
            await writer.drain()
            opened.clear()
            await opened.wait()
            continue
        n = min(len(view), window, conn.max_outbound_frame_size)
        conn.send_data(sid, view[:n].tobytes(), end_stream=(n == len(view)))
        view = view[n:]
