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

from netlab.dataplane.apps import _http
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


def outgoing(req: _http.Message, up: Upstream, client_ip: str,
             rewrite_host: str | None) -> _http.Message:
    """The request Go's ReverseProxy would send: same Host unless told otherwise."""
    named = {t.strip().lower() for t in (req.header("connection") or "").split(",")}
    drop = _http.HOP_BY_HOP | named | {"host", "x-forwarded-for", "expect", "content-length"}
    headers = [(k, v) for k, v in req.headers if k.lower() not in drop]
    host = rewrite_host or req.header("host") or up.authority()
    prior = req.all("x-forwarded-for")
    xff = ", ".join(prior + [client_ip])
    headers = [("Host", host)] + headers + [("X-Forwarded-For", xff)]
    if req.body or req.method in ("POST", "PUT", "PATCH"):
        headers.append(("Content-Length", str(len(req.body))))
    return _http.Message(version="HTTP/1.1", method=req.method, target=up.target(req.target),
                         headers=headers, body=req.body)


async def forward(out: _http.Message, up: Upstream) -> _http.Message:
    """One request on a fresh upstream connection; the name is resolved now, not at start."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(up.host, up.port),
                                            CONNECT_TIMEOUT)
    try:
        writer.write(_http.encode_request(out))
        await writer.drain()
        return await asyncio.wait_for(_http.read_response(reader, out.method),
                                      RESPONSE_TIMEOUT)
    finally:
        writer.close()


def handler(up: Upstream, rewrite_host: str | None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer, local = addr(peername), addr(writer.get_extra_info("sockname"))
        while True:
            try:
                req = await _http.read_request(reader, writer)
            except _http.BadMessage as e:
                writer.write(_http.encode_response(400, [], b"", keep_alive=False))
                log(image="reverse-proxy", peer=peer, local=local, status=400, error=str(e))
                break
            if req is None:
                break
            start = time.monotonic()
            out = outgoing(req, up, peername[0], rewrite_host)
            fields: dict[str, object] = {}
            try:
                resp = await forward(out, up)
                status, reason, body = resp.status, resp.reason, resp.body
                named = {t.strip().lower() for t in (resp.header("connection") or "").split(",")}
                headers = [(k, v) for k, v in resp.headers
                           if k.lower() not in _http.HOP_BY_HOP | named]
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    _http.BadMessage) as e:
                # Go's default ErrorHandler: log "http: proxy error", answer 502, no body.
                status, reason, body, headers = 502, "", b"", []
                fields["error"] = f"{type(e).__name__}: {e}"
            keep = req.keep_alive()
            writer.write(_http.encode_response(status, headers, body, reason=reason,
                                               keep_alive=keep, version=req.version,
                                               head_only=req.method == "HEAD"))
            await writer.drain()
            log(image="reverse-proxy", peer=peer, local=local, method=req.method,
                host=req.header("host") or "", path=req.target,
                upstream=f"{up.host}:{up.port}", upstream_host_header=out.header("host"),
                status=status, duration_ms=round((time.monotonic() - start) * 1000, 1),
                **fields)
            if not keep:
                break
    return handle


async def serve(ports: list[int], upstream: str, rewrite_host: str | None = None,
                host: str = "0.0.0.0") -> Listeners:
    listeners = Listeners()
    await listeners.listen(handler(Upstream.parse(upstream), rewrite_host), host, ports)
    return listeners
