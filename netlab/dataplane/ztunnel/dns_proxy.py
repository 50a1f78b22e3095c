"""ztunnel's DNS proxy: 127.0.0.1:15053 (UDP and TCP) inside each ambient pod's netns.

istio-cni's default in-pod rules REDIRECT the app's DNS (UDP :53, and TCP :53 from 1.24)
to 15053. REDIRECT in nat OUTPUT rewrites the destination to 127.0.0.1, so that is
where we listen: a reply sent from 127.0.0.1:15053 matches conntrack's reply tuple and
is un-NATed back to look as if it came from the cluster DNS.

What it answers itself: A and AAAA queries for the Kubernetes Services in the ztunnel
config, found and answered as ztunnel 1.24 does (`NameTable`).
Everything else goes, byte for byte, to the pod's upstream resolver (the cluster DNS)
from a socket marked 0x539, so the in-pod rules leave it alone. A malformed query gets
FORMERR (or nothing, without a header); an upstream that does not answer, SERVFAIL.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any, Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from netlab import mesh
from netlab.dataplane.dns import formerr, normalize, serve_tcp_queries
from netlab.dataplane.proxy.sockets import marked_socket
from netlab.snapshot import Service

log = logging.getLogger("ztunnel.dns")
DNS_PROXY_PORT = mesh.DNS_PROXY_PORT
LISTEN_IP = "127.0.0.1"  # where nat OUTPUT REDIRECT sends the app's queries
# Shorter than glibc's 5 s per try: the client gets SERVFAIL rather than its own timeout.
UPSTREAM_TIMEOUT = 2.5
UDP_PLAIN_MAX = 512


TTL = 30  # DEFAULT_TTL_SECONDS, ztunnel@1.24.0 src/dns/server.rs


class NameTable:
    """The Service names one pod may ask for, found the way ztunnel 1.24 finds them.

    ztunnel's `Store::find_server` tries *aliases* of the asked name, first hit wins
    (src/dns/server.rs `get_aliases`, `to_kube_fqdns`):

    1. the name itself;
    2. its Kubernetes expansions by label count (`a` → `a.<ns>.svc.<d>`; `a.b` →
       `a.b.svc.<d>`, `a.b.<ns>.svc.<d>`; `a.b.svc` → `a.b.svc.<d>`, `a.b.svc.svc.<d>`;
       `a.b.c.svc` → `a.b.c.svc.<d>`);
    3. for each search domain of the pod (`<ns>.svc.<d>`, `svc.<d>`, `<d>`) the name
       with that domain trimmed, and that stripped name's expansions.

    The answer is one A record per VIP under the *asked* name, TTL 30; a match found
    by trimming a search domain answers a CNAME asked-name → stripped name, then the A
    under the stripped name. AAAA for an IPv4 Service is NOERROR with no records.
    """

    def __init__(self, services: Iterable[Service], namespace: str,
                 domain: str = mesh.DNS_DOMAIN, ttl: int = TTL) -> None:
        self.domain = normalize(domain)
        self.ttl = ttl
        self.namespace = namespace
        self.records: dict[str, list[str]] = {}
        for s in services:
            ips = self.records.setdefault(f"{s.name}.{s.namespace}.svc.{self.domain}", [])
            if s.vip not in ips:
                ips.append(s.vip)
        self.svc_domain = f"svc.{self.domain}"
        self.search = (f"{namespace}.svc.{self.domain}", self.svc_domain, self.domain)

    def _kube_fqdns(self, name: str) -> list[str]:
        labels = name.split(".")
        own = f"{self.namespace}.svc.{self.domain}"
        if len(labels) == 1:
            return [f"{name}.{own}"]
        if len(labels) == 2:
            return [f"{name}.{self.svc_domain}", f"{name}.{own}"]
        if len(labels) == 3:
            return ([f"{name}.{self.domain}"] if labels[-1] == "svc" else []) + [f"{name}.{self.svc_domain}"]
        if len(labels) == 4 and labels[-1] == "svc":
            return [f"{name}.{self.domain}"]
        return []

    def aliases(self, qname: str) -> list[tuple[str, str | None]]:
        """(alias, stripped name or None) in ztunnel's order, without repeats."""
        name = normalize(qname)
        out: list[tuple[str, str | None]] = []
        seen: set[str] = set()

        def add(alias: str, stripped: str | None) -> None:
            if alias not in seen:
                seen.add(alias)
                out.append((alias, stripped))

        add(name, None)
        for fqdn in self._kube_fqdns(name):
            add(fqdn, None)
        for domain in self.search:
            if name.endswith("." + domain) and len(name) > len(domain) + 1:
                stripped = name[: -len(domain) - 1]
                add(stripped, stripped)
                for fqdn in self._kube_fqdns(stripped):
                    add(fqdn, stripped)
        return out

    def find(self, qname: str) -> tuple[str, str | None] | None:
        """(Service FQDN, stripped name or None) that `qname` stands for, or None."""
        for alias, stripped in self.aliases(qname):
            if alias in self.records:
                return alias, stripped
        return None

    def lookup(self, qname: str) -> str | None:
        """The Service FQDN `qname` stands for from this pod, or None if it is not one."""
        hit = self.find(qname)
        return hit[0] if hit else None

    def respond(self, query: dns.message.Message) -> dns.message.Message | None:
        """Our own answer to a parsed query, or None when it must go upstream."""
        if len(query.question) != 1:
            return None
        q = query.question[0]
        if q.rdclass != dns.rdataclass.IN or q.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            return None
        hit = self.find(q.name.to_text())
        if hit is None:
            return None
        fqdn, stripped = hit
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA | dns.flags.RA
        if q.rdtype != dns.rdatatype.A:  # IPv4-only Services: found, but no records
            return resp
        owner = q.name
        if stripped is not None:
            owner = dns.name.from_text(stripped)
            resp.answer.append(dns.rrset.from_text(q.name, self.ttl, "IN", "CNAME", owner.to_text()))
        resp.answer.append(dns.rrset.from_text_list(owner, self.ttl, "IN", "A", self.records[fqdn]))
        return resp


def servfail(query: dns.message.Message) -> bytes:
    resp = dns.message.make_response(query)
    resp.flags |= dns.flags.RA
    resp.set_rcode(dns.rcode.SERVFAIL)
    return resp.to_wire()


class Upstream:
    """The pod's resolver, asked from a fresh marked socket per query (random source port)."""

    def __init__(self, addr: tuple[str, int] | None, netns: str | None,
                 timeout: float = UPSTREAM_TIMEOUT) -> None:
        self.addr, self.netns, self.timeout = addr, netns, timeout

    async def udp(self, wire: bytes) -> bytes | None:
        if self.addr is None:
            return None
        loop = asyncio.get_running_loop()
        s = marked_socket(self.netns, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            async with asyncio.timeout(self.timeout):
                await loop.sock_connect(s, self.addr)  # connected: only the resolver's replies
                await loop.sock_sendall(s, wire)
                while True:
                    reply = await loop.sock_recv(s, 65535)
                    if reply[:2] == wire[:2]:  # same id; anything else is not our answer
                        return reply
        except (OSError, TimeoutError):
            return None
        finally:
            s.close()

    async def tcp(self, wire: bytes) -> bytes | None:
        if self.addr is None:
            return None
        s = marked_socket(self.netns, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        writer = None
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.get_running_loop().sock_connect(s, self.addr)
                reader, writer = await asyncio.open_connection(sock=s)
                writer.write(struct.pack("!H", len(wire)) + wire)
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                return await reader.readexactly(n)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return None
        finally:
            if writer is not None:
                writer.close()
            else:
                s.close()


class DnsProxy:
    """15053 in one pod: answer known Services, forward the rest."""

    def __init__(self, netns: str, table: NameTable, upstream: Upstream) -> None:
        self.netns, self.table, self.upstream = netns, table, upstream
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, wire: bytes, udp: bool) -> bytes:
        """The reply to one query message; b"" means send nothing."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return formerr(wire)
        try:
            resp = self.table.respond(query)
            if resp is not None:
                log.debug("answered %s", query.question[0].name)
                return resp.to_wire(max_size=_max_size(query) if udp else 65535)
            reply = await (self.upstream.udp(wire) if udp else self.upstream.tcp(wire))
            return reply if reply is not None else servfail(query)
        except Exception:  # noqa: BLE001 - one bad query must never take ztunnel down
            log.exception("dns proxy in %s failed on a query", self.netns)
            return servfail(query)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        udp = marked_socket(self.netns, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        tcp = marked_socket(self.netns, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            udp.bind((LISTEN_IP, DNS_PROXY_PORT))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((LISTEN_IP, DNS_PROXY_PORT))
            tcp.listen(128)
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp)
        except BaseException:
            udp.close()
            tcp.close()
            raise
        self._tcp = await asyncio.start_server(self._on_tcp, sock=tcp)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for t in list(self._tasks):
            t.cancel()

    async def _answer_udp(self, wire: bytes, peer: tuple[str, int]) -> None:
        out = await self.handle(wire, udp=True)
        if out and self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(out, peer)

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await serve_tcp_queries(reader, writer, lambda query: self.handle(query, udp=False))
        finally:
            if task is not None:
                self._tasks.discard(task)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, proxy: DnsProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, peer: tuple[str, int]) -> None:
        self.proxy._spawn(self.proxy._answer_udp(data, peer))  # forwarding waits: no blocking


def _max_size(query: dns.message.Message) -> int:
    return max(query.payload, UDP_PLAIN_MAX) if query.edns >= 0 else UDP_PLAIN_MAX


def for_pod(netns: str, namespace: str, services: Iterable[Service],
            upstream: str | None, domain: str, forward_in_pod: bool) -> DnsProxy:
    """The DNS proxy of one pod.

    `forward_in_pod`: forward from a marked socket in the pod netns (1.24+, whose rules
    exempt mark 0x539 from the DNS REDIRECT). Istio 1.23's UDP DNS REDIRECT has no mark
    exemption, so there we forward from ztunnel's own (node) netns instead.
    """
    addr = _parse_upstream(upstream)
    return DnsProxy(netns, NameTable(services, namespace, domain),
                    Upstream(addr, netns if forward_in_pod else None))


def _parse_upstream(upstream: str | None) -> tuple[str, int] | None:
    if not upstream:
        return None
    host, _, port = upstream.rpartition(":") if ":" in upstream else (upstream, "", "53")
    return host, int(port)
