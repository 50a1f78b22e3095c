"""Cluster DNS for a whole lab: one process, one asyncio loop, a listener per node netns.

kube-dns/CoreDNS answers pods on the Service IP 10.96.0.10. Here the builder puts that
address on every node's `lo`, and this process enters each node's netns just long
enough to bind UDP and TCP port 53 there (sockets stay in the netns they were made
in), so dozens of nodes cost one process, not dozens.

There is no upstream network in a lab, so names outside the cluster domain are
REFUSED rather than forwarded: a fast, visible failure instead of a timeout.

    python -m netlab.dataplane.dns --config FILE.json

Config: {"listen": "10.96.0.10", "netns": ["nl-lab-node-node-1", ...],
         "records": {"ratings.bookinfo.svc.cluster.local": "10.96.0.11", ...},
         "ttl": 5, "port": 53, "domain": "cluster.local", "log_queries": true}
`records` values may be one address or a list (headless services). An empty or
missing `netns` list binds in the current netns (tests). SIGHUP re-reads the file.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import socket
import struct
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from netlab.dataplane.apps._log import addr, log
from netlab.dataplane.proxy import lifecycle
from netlab.mesh import DNS_DOMAIN

DEFAULT_TTL = 5
DEFAULT_DOMAIN = DNS_DOMAIN
UDP_PLAIN_MAX = 512
TCP_IDLE = 30.0


def normalize(name: str) -> str:
    return name.rstrip(".").lower()


class Zone:
    """The records of the cluster domain, indexed for answering."""

    def __init__(self, records: Mapping[str, str | Sequence[str]], ttl: int = DEFAULT_TTL,
                 domain: str = DEFAULT_DOMAIN) -> None:
        self.ttl = ttl
        self.domain = normalize(domain)
        self.names: dict[str, list[str]] = {}
        for name, value in records.items():
            ips = [value] if isinstance(value, str) else list(value)
            for ip in ips:
                if ipaddress.ip_address(ip).version != 4:
                    raise ValueError(f"{name}: only IPv4 records are served, got {ip}")
            self.names[normalize(name)] = ips
        # Empty non-terminals (e.g. svc.cluster.local) exist: NOERROR, not NXDOMAIN.
        self.parents: set[str] = set()
        for name in self.names:
            labels = name.split(".")
            self.parents.update(".".join(labels[i:]) for i in range(1, len(labels)))

    def in_domain(self, name: str) -> bool:
        return name == self.domain or name.endswith("." + self.domain)

    def respond(self, wire: bytes, udp: bool = False) -> tuple[bytes, dict[str, Any]]:
        """The response to one query message, and what to log about it.

        Over UDP the answer must fit 512 bytes, or the client's EDNS payload size;
        if not, it goes out empty with TC set and the client retries over TCP.
        """
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException as e:
            return formerr(wire), {"rcode": "FORMERR", "error": str(e)}
        resp = dns.message.make_response(query)
        info: dict[str, Any] = {}
        if query.opcode() != dns.opcode.QUERY:
            resp.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            resp.set_rcode(dns.rcode.FORMERR)
        else:
            q = query.question[0]
            info = {"qname": q.name.to_text(), "qtype": dns.rdatatype.to_text(q.rdtype)}
            self._fill(resp, q)
        info["rcode"] = dns.rcode.to_text(resp.rcode())
        max_size = 65535
        if udp:
            max_size = max(query.payload, UDP_PLAIN_MAX) if query.edns >= 0 else UDP_PLAIN_MAX
        try:
            return resp.to_wire(max_size=max_size), info
        except dns.exception.TooBig:
            resp.answer.clear()
            resp.flags |= dns.flags.TC
            info["truncated"] = True
            return resp.to_wire(), info

    def _fill(self, resp: dns.message.Message, q: dns.rrset.RRset) -> None:
        name = normalize(q.name.to_text())
        if q.rdclass != dns.rdataclass.IN or not self.in_domain(name):
            resp.set_rcode(dns.rcode.REFUSED)
            return
        resp.flags |= dns.flags.AA
        ips = self.names.get(name)
        if ips is None and name not in self.parents and name != self.domain:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        if ips and q.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            resp.answer.append(dns.rrset.from_text_list(q.name, self.ttl, "IN", "A", ips))
            return
        # NXDOMAIN or NODATA (e.g. AAAA for a v4-only Service): the SOA lets resolvers
        # cache the negative answer, as CoreDNS does.
        resp.authority.append(dns.rrset.from_text(
            self.domain + ".", self.ttl, "IN", "SOA",
            f"ns.dns.{self.domain}. hostmaster.{self.domain}. 1 7200 1800 86400 {self.ttl}"))


def formerr(wire: bytes) -> bytes:
    """A bare FORMERR echoing the query id; nothing at all if there is no header."""
    if len(wire) < 12:
        return b""
    return wire[:2] + struct.pack("!HHHHH", 0x8001, 0, 0, 0, 0)


def answer(query_wire: bytes, records: Mapping[str, str | Sequence[str]] | Zone,
           ttl: int = DEFAULT_TTL) -> bytes:
    """The response bytes for one query: pure, for tests and for reuse."""
    zone = records if isinstance(records, Zone) else Zone(records, ttl)
    return zone.respond(query_wire)[0]


async def serve_tcp_queries(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            answer: Callable[[bytes], Awaitable[bytes | None]]) -> None:
    """DNS over TCP (RFC 7766): length-prefixed queries in turn until EOF, idle or no answer."""
    try:
        while True:
            (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE))
            out = await answer(await reader.readexactly(n))
            if not out:
                break
            writer.write(struct.pack("!H", len(out)) + out)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
        pass
    finally:
        writer.close()


@dataclass
class Config:
    listen: str
    netns: list[str]
    zone: Zone
    port: int = 53
    log_queries: bool = True

    @classmethod
    def load(cls, path: str) -> "Config":
        with open(path) as f:
            raw = json.load(f)
        listen = raw["listen"]
        ipaddress.ip_address(listen)
        zone = Zone(raw.get("records", {}), int(raw.get("ttl", DEFAULT_TTL)),
                    raw.get("domain", DEFAULT_DOMAIN))
        return cls(listen=listen, netns=list(raw.get("netns") or []), zone=zone,
                   port=int(raw.get("port", 53)), log_queries=bool(raw.get("log_queries", True)))

    def bindings(self) -> set[tuple[str | None, str, int]]:
        return {(ns, self.listen, self.port) for ns in (self.netns or [None])}


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: "DnsServer", netns: str | None) -> None:
        self.server, self.netns = server, netns
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, peer: tuple[str, int]) -> None:
        out = self.server.handle(data, self.netns, "udp", peer)
        if out and self.transport is not None:
            self.transport.sendto(out, peer)


@dataclass
class _Binding:
    udp: asyncio.DatagramTransport
    tcp: asyncio.Server
    conns: set[asyncio.Task[None]] = field(default_factory=set)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()
        for t in self.conns:
            t.cancel()


def _bind_sockets(netns_name: str | None, listen: str, port: int) -> tuple[socket.socket,
                                                                           socket.socket]:
    """Make and bind the sockets inside the netns; they stay there after we leave it."""
    if netns_name is None:
        ctx: Any = nullcontext()
    else:
        from netlab.kernel import netns  # ctypes and libc: only when there are netns
        ctx = netns.entered(netns_name)
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    made: list[socket.socket] = []
    try:
        with ctx:
            udp = socket.socket(family, socket.SOCK_DGRAM)
            made.append(udp)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            made.append(tcp)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((listen, port))
            tcp.bind((listen, port))
            tcp.listen(128)
    except BaseException:
        for s in made:
            s.close()
        raise
    udp.setblocking(False)
    tcp.setblocking(False)
    return udp, tcp


class DnsServer:
    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self.config = Config.load(config_path)
        self.bound: dict[tuple[str | None, str, int], _Binding] = {}
        self.lock = asyncio.Lock()  # a SIGHUP may arrive while the first bind runs

    def handle(self, wire: bytes, netns_name: str | None, proto: str, peer: Any) -> bytes:
        out, info = self.config.zone.respond(wire, udp=proto == "udp")
        if self.config.log_queries:
            log(image="dns", netns=netns_name, proto=proto, peer=addr(peer), **info)
        return out

    async def _bind(self, key: tuple[str | None, str, int]) -> _Binding:
        ns = key[0]
        udp_sock, tcp_sock = _bind_sockets(*key)
        loop = asyncio.get_running_loop()
        try:
            udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self, ns), sock=udp_sock)
        except BaseException:
            udp_sock.close()
            tcp_sock.close()
            raise
        conns: set[asyncio.Task[None]] = set()

        async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            conns.add(task)
            peer = writer.get_extra_info("peername")
            async def answer(query: bytes) -> bytes | None:
                return self.handle(query, ns, "tcp", peer)

            try:
                await serve_tcp_queries(reader, writer, answer)
            finally:
                conns.discard(task)

        tcp = await asyncio.start_server(on_tcp, sock=tcp_sock)
        return _Binding(udp, tcp, conns)  # type: ignore[arg-type]

    async def sync(self) -> None:
        """Bind what the config wants and close what it no longer does."""
        async with self.lock:
            wanted = self.config.bindings()
            for key in set(self.bound) - wanted:
                self.bound.pop(key).close()
            for key in sorted(wanted - set(self.bound), key=str):
                self.bound[key] = await self._bind(key)

    async def reload(self) -> None:
        try:
            self.config = Config.load(self.config_path)
            await self.sync()
        except (OSError, ValueError, KeyError, TypeError) as e:
            log(image="dns", reloaded=False, error=f"{type(e).__name__}: {e}")
            return
        log(image="dns", reloaded=True, records=len(self.config.zone.names),
            netns=[k[0] for k in sorted(self.bound, key=str)])

    async def start(self) -> "DnsServer":
        await self.sync()
        return self

    async def close(self) -> None:
        for b in self.bound.values():
            b.close()
        self.bound.clear()

    async def run(self) -> None:
        """Bind every node's listener, say ready, serve; SIGHUP re-reads the config."""
        pending: set[asyncio.Task[None]] = set()

        def on_hup() -> None:
            t = asyncio.ensure_future(self.reload())
            pending.add(t)
            t.add_done_callback(pending.discard)

        await lifecycle.serve(self.start, signals={signal.SIGHUP: on_hup},
                              on_ready=lambda _: print(json.dumps({"ready": True}), flush=True))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netlab.dataplane.dns",
                                description="netlab cluster DNS (kube-dns stand-in)")
    p.add_argument("--config", required=True, help="JSON config file (re-read on SIGHUP)")
    args = p.parse_args(argv)
    try:
        server = DnsServer(args.config)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"dns: bad config {args.config}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(server.run())
    except OSError as e:
        print(f"dns: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
