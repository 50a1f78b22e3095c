"""The agent's two modes. Steal: redirect the port to ourselves and answer; mirror: sniff.

Every stolen connection gets an HTTP 200 whose body says `stolen-by-netlab-agent`, so the
*client* can tell a steal from the real app's answer; the lab judges that reply, never
this process' log.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from netlab.dataplane.proxy import lifecycle
from netlab.dataplane.steal import rules
from netlab.kernel.afpacket import Segment, Sniffer, open_socket
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


class Stealing:
    """A running steal: the agent's listener, its nat rules and maybe route_localnet."""

    def __init__(self, opts: Options, server: asyncio.Server) -> None:
        self.opts, self.server = opts, server
        self.restore_localnet: str | None = None

    def ready(self) -> None:
        log(event="ready", mode="steal", port=self.opts.port, agent_port=self.opts.agent_port,
            output_jump="first" if self.opts.ambient_aware else "appended")

    async def close(self) -> None:
        failed = rules.remove()
        if self.restore_localnet is not None:
            rules.write_route_localnet(self.restore_localnet)
        log(event="cleanup", rules_removed=not failed, failed=failed,
            route_localnet_restored=self.restore_localnet)
        self.server.close()


async def steal(opts: Options) -> Stealing:
    """Listen, then redirect the port to us; a failure halfway undoes what was done."""
    running = Stealing(opts, await asyncio.start_server(_answer, "0.0.0.0", opts.agent_port))
    try:
        mesh = rules.mesh()
        log(event="mesh", detected=mesh)
        running.restore_localnet = _setup_localnet(opts, mesh)
        rules.install(render_steal(opts.port, opts.agent_port, opts.agent_gid,
                                   output_jump_first=opts.ambient_aware))
    except BaseException:
        await running.close()
        raise
    return running


class Mirroring:
    """A running mirror: a sniffer copying the port's requests into the log."""

    def __init__(self, opts: Options, sniffer: Sniffer) -> None:
        self.opts, self.sniffer = opts, sniffer

    def ready(self) -> None:
        log(event="ready", mode="mirror", port=self.opts.port)

    async def close(self) -> None:
        self.sniffer.stop()
        log(event="cleanup", rules_removed=True, failed=[])


async def mirror(opts: Options) -> Mirroring:
    def copy(seg: Segment) -> None:
        if seg.payload and seg.dport == opts.port:
            first = seg.payload.split(b"\r\n", 1)[0].decode("latin-1")
            log(event="mirror", ifname=seg.ifname, src=f"{seg.saddr}:{seg.sport}",
                dst=f"{seg.daddr}:{seg.dport}", bytes=len(seg.payload), request=first)

    running = Mirroring(opts, Sniffer(open_socket(), [opts.port], copy).start())
    log(event="mesh", detected=rules.mesh())
    return running


def run(opts: Options) -> int:
    """The agent's life: signals, steal or mirror, "ready", wait for SIGTERM, clean up."""
    start = (lambda: steal(opts)) if opts.mode == "steal" else (lambda: mirror(opts))
    lifecycle.run(start, on_ready=lambda running: running.ready())
    return 0
