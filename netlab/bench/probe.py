"""The bench's client: `python -m netlab.bench.probe` in a client pod, one HTTP GET per target.

Run inside a pod (its netns and resolv.conf), so in a meshed namespace every request
takes the mesh's path: the pod's capture rules, its node's ztunnel, HBONE to the
server's node. A target is a host (a pod IP, or a Service's DNS name, resolved by the
pod's resolver) and port; an answer counts when it is an http-echo 200 whose `server`
is one the target may reach. Each request is a new connection (`Connection: close`),
as a mesh load-balances and authorizes per connection.

stdin: {"targets": [{"host": h, "port": p, "servers": [names]}], "timeout": s,
"tries": n}. stdout: {"answered": n, "failed": [{"target", "error"}], "seconds": s}.
Only the standard library: the probe's own start-up is part of what the bench waits for.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

CONCURRENCY = 32


async def get(host: str, port: int, timeout: float) -> str:
    """One GET / on a new connection; the echo's `server` field, or raise with why not."""
    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()

    raw = await asyncio.wait_for(exchange(), timeout)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if not status.startswith("HTTP/1.1 200"):
        raise ValueError(f"answered {status!r}")
    return str(json.loads(body)["server"])


async def probe(targets: list[dict[str, Any]], timeout: float, tries: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(CONCURRENCY)
    failed: list[dict[str, str]] = []

    async def one(t: dict[str, Any]) -> bool:
        error = "not tried"
        async with gate:
            for _ in range(tries):
                try:
                    server = await get(t["host"], int(t["port"]), timeout)
                except (OSError, ValueError, KeyError, asyncio.TimeoutError) as e:
                    error = f"{type(e).__name__}: {e}"
                    continue
                if t.get("servers") and server not in t["servers"]:
                    error = f"answered by {server!r}, which is not behind it"
                    continue
                return True
        failed.append({"target": f"{t['host']}:{t['port']}", "error": error})
        return False

    started = time.perf_counter()
    results = await asyncio.gather(*(one(t) for t in targets))
    return {"answered": sum(results), "failed": failed, "seconds": time.perf_counter() - started}


def main() -> int:
    request = json.load(sys.stdin)
    result = asyncio.run(probe(request["targets"], float(request.get("timeout", 5.0)),
                               int(request.get("tries", 3))))
    json.dump(result, sys.stdout)
    return 0 if not result["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
