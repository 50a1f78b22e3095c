"""The agent's two modes. Steal: redirect the port to ourselves and answer; mirror: sniff.

Every stolen connection gets an HTTP 200 whose body says `stolen-by-netlab-agent`, so the
*client* can tell a steal from the real app's answer; the lab judges that reply, never
this process' log.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from netlab.dataplane.steal import rules
from netlab.dataplane.steal.sniff import Segment, Sniffer, open_socket
from netlab.plan.steal_rules import render_steal

MARKER = "stolen-by-netlab-agent"
LOCALNET_WARNING = ("route_localnet could not be set (the agent is not privileged); "
                    "stealing may fail under a service mesh such as Istio ambient")


@dataclass(frozen=True)
class Options:
    mode: str
    port: int
    agent_port: int
    agent_gid: int
    ambient_aware: bool
    privileged: bool


def log(**fields: Any) -> None:
    print(json.dumps({"ts": round(time.time(), 6), **fields}), flush=True)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    local = writer.get_extra_info("sockname")
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
            ConnectionError):
        head = b""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    body = json.dumps({"body": MARKER, "peer": f"{peer[0]}:{peer[1]}",
                       "local": f"{local[0]}:{local[1]}", "request": line}).encode() + b"\n"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    log(event="stolen", peer=f"{peer[0]}:{peer[1]}", local=f"{local[0]}:{local[1]}", request=line)
    try:
        await writer.drain()
    finally:
        writer.close()


def _setup_localnet(opts: Options, mesh: str) -> str | None:
    """Returns the previous value when we changed it (to restore on exit)."""
    if opts.privileged:
        before = rules.read_route_localnet()
        rules.write_route_localnet("1")
        log(event="sysctl", key="net.ipv4.conf.all.route_localnet", before=before, after="1")
        return before
    if opts.ambient_aware and mesh == "istio-ambient":
        try:
            rules.drop_sysctl_privilege()
            rules.write_route_localnet("1")
        except OSError as e:
            log(event="warning", message=LOCALNET_WARNING, error=str(e))
            print(f"WARNING: {LOCALNET_WARNING}", file=sys.stderr, flush=True)
    return None


async def steal(opts: Options, stop: asyncio.Event) -> None:
    server = await asyncio.start_server(_answer, "0.0.0.0", opts.agent_port)
    mesh = rules.mesh()
    log(event="mesh", detected=mesh)
    restore_localnet = None
    try:
        restore_localnet = _setup_localnet(opts, mesh)
        rules.install(render_steal(opts.port, opts.agent_port, opts.agent_gid,
                                   output_jump_first=opts.ambient_aware))
        log(event="ready", mode="steal", port=opts.port, agent_port=opts.agent_port,
            output_jump="first" if opts.ambient_aware else "appended")
        await stop.wait()
    finally:
        failed = rules.remove()
        if restore_localnet is not None:
            rules.write_route_localnet(restore_localnet)
        log(event="cleanup", rules_removed=not failed, failed=failed,
            route_localnet_restored=restore_localnet)
        server.close()


async def mirror(opts: Options, stop: asyncio.Event) -> None:
    def copy(seg: Segment) -> None:
        if seg.payload and seg.dport == opts.port:
            first = seg.payload.split(b"\r\n", 1)[0].decode("latin-1")
            log(event="mirror", ifname=seg.ifname, src=f"{seg.saddr}:{seg.sport}",
                dst=f"{seg.daddr}:{seg.dport}", bytes=len(seg.payload), request=first)

    sniffer = Sniffer(open_socket(), [opts.port], copy).start()
    log(event="mesh", detected=rules.mesh())
    log(event="ready", mode="mirror", port=opts.port)
    try:
        await stop.wait()
    finally:
        sniffer.stop()
        log(event="cleanup", rules_removed=True, failed=[])


def run(opts: Options) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await (steal(opts, stop) if opts.mode == "steal" else mirror(opts, stop))

    asyncio.run(main())
    return 0
