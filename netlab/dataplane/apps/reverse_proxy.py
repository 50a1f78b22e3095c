"""reverse-proxy: Go's httputil.NewSingleHostReverseProxy, as prom-label-proxy uses it.

The point of this image is istio#55472 (mesh-facts §10(d)): Go rewrites the URL to
the upstream but keeps the incoming Host header, so the client sidecar routes by a
Host that names the proxy, not the upstream, and falls to PassthroughCluster.
`--rewrite-host-header-to` is the fix prom-label-proxy shipped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from netlab.dataplane import http1
from netlab.dataplane.apps._log import addr, log
from netlab.dataplane.apps._serve import Handler, Listeners

CONNECT_TIMEOUT = 10.0
RESPONSE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int
    path: str  # joined before the request path, as Go's singleJoiningSlash does

    @classmethod
    def parse(cls, url: str) -> "Upstream":
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"upstream must be http://HOST[:PORT][/path], got {url!r}")
        return cls(u.hostname, u.port or 80, u.path)

    def authority(self) -> str:
        return self.host if self.port == 80 else f"{self.host}:{self.port}"

    def target(self, incoming: str) -> str:
        """The request target sent upstream: upstream path + incoming path + query."""
        if "://" in incoming:  # absolute-form: keep only path and query
            u = urlsplit(incoming)
            incoming = (u.path or "/") + (f"?{u.query}" if u.query else "")
        if not self.path:
            return incoming
        return self.path.rstrip("/") + "/" + incoming.lstrip("/")


def outgoing(req: http1.Request, up: Upstream, client_ip: str,
             rewrite_host: str | None) -> http1.Request:
    """The request Go's ReverseProxy would send: same Host unless told otherwise."""
    drop = {"host", "x-forwarded-for", "expect"}
    headers = [(k, v) for k, v in req.end_to_end() if k.lower() not in drop]
    host = rewrite_host or req.header("host") or up.authority()
    xff = ", ".join(req.all("x-forwarded-for") + [client_ip])
    headers = [("Host", host)] + headers + [("X-Forwarded-For", xff)]
    return http1.Request(method=req.method, target=up.target(req.target), headers=headers,
                         body=req.body)


async def forward(out: http1.Request, up: Upstream) -> http1.Response:
    """One request on a fresh upstream connection; the name is resolved now, not at start."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(up.host, up.port),
                                            CONNECT_TIMEOUT)
    try:
        conn = http1.ClientConnection(reader, writer)

        async def exchange() -> http1.Response:
            await conn.send_request(out)
            return await conn.read_response()
        return await asyncio.wait_for(exchange(), RESPONSE_TIMEOUT)
    finally:
        writer.close()


def handler(up: Upstream, rewrite_host: str | None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer, local = addr(peername), addr(writer.get_extra_info("sockname"))

        async def respond(req: http1.Request) -> http1.Response:
            start = time.monotonic()
            out = outgoing(req, up, peername[0], rewrite_host)
            fields: dict[str, object] = {}
            try:
                got = await forward(out, up)
                reply = http1.Response(got.status, got.end_to_end(), got.body, got.reason)
            except (OSError, asyncio.TimeoutError, http1.HttpError) as e:
                # Go's default ErrorHandler: log "http: proxy error", answer 502, no body.
                reply = http1.Response(502)
                fields["error"] = f"{type(e).__name__}: {e}"
            log(image="reverse-proxy", peer=peer, local=local, method=req.method,
                host=req.header("host") or "", path=req.target,
                upstream=f"{up.host}:{up.port}", upstream_host_header=out.header("host"),
                status=reply.status, duration_ms=round((time.monotonic() - start) * 1000, 1),
                **fields)
            return reply

        def bad(e: http1.HttpError) -> None:
            log(image="reverse-proxy", peer=peer, local=local, status=e.status, error=str(e))

        await http1.serve(reader, writer, respond, bad)
    return handle


async def serve(ports: list[int], upstream: str, rewrite_host: str | None = None,
                host: str = "0.0.0.0") -> Listeners:
    listeners = Listeners()
    await listeners.listen(handler(Upstream.parse(upstream), rewrite_host), host, ports)
    return listeners
