"""Which process owns a socket, and which socket really sent a packet seen after NAT.

Why: a packet's addresses are not its sender. After a REDIRECT, the listener that
answers 127.0.0.1:39080 sends its SYN-ACK as pod:9080 (conntrack un-NATs the reply), so
a picture drawn by port puts the agent's answer in the app's lane. Two readings fix
that, both from the kernel:

- conntrack's reply tuple names the socket that answers a NATed connection
  (`through_nat`);
- the listening sockets of a netns, with the process holding each one's inode in its
  file table (`listeners`, the `ss -ltnp` view), name the process behind a port.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from netlab import mesh
from netlab.kernel import netns as nsmod

TCP_LISTEN = "0A"
Endpoint = tuple[str, str, int]  # (netns, address, port)


@dataclass(frozen=True)
class Listener:
    netns: str
    addr: str
    port: int
    pid: int | None  # the process whose file table holds the socket (None: not one of `pids`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _addr(hex_addr: str) -> tuple[str, int]:
    ip, port = hex_addr.split(":")
    raw = bytes.fromhex(ip)[::-1] if len(ip) == 8 else bytes.fromhex(ip)
    addr = ".".join(str(b) for b in raw) if len(raw) == 4 else raw.hex()
    return addr, int(port, 16)


def _listening(netns: str) -> list[tuple[str, int, int]]:
    with nsmod.entered(netns):
        with open("/proc/thread-self/net/tcp") as f:
            rows = f.readlines()[1:]
    out = []
    for row in rows:
        cols = row.split()
        if cols[3] == TCP_LISTEN:
            addr, port = _addr(cols[1])
            out.append((addr, port, int(cols[9])))
    return out


def socket_inodes(pid: int) -> set[int]:
    """The socket inodes in `pid`'s file table (empty when it is gone or not readable)."""
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def listeners(netns: str, pids: Iterable[int]) -> list[Listener]:
    """The TCP listeners in `netns`, each with the one of `pids` that holds it.

    Only `pids` are searched (a lab's own processes), which is quick and never
    attributes a socket to a stranger; a socket held by none of them gets pid None.
    """
    owner: dict[int, int] = {}
    for pid in pids:
        for inode in socket_inodes(pid):
            owner.setdefault(inode, pid)
    return [Listener(netns, addr, port, owner.get(inode))
            for addr, port, inode in _listening(netns)]


def _tuple(e: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    return e.get("saddr"), e.get("sport"), e.get("daddr"), e.get("dport")


def _hop(conntrack: list[Mapping[str, Any]], orig: tuple[Any, Any, Any, Any],
         fixed: tuple[Any, Any]) -> Mapping[str, Any] | None:
    """The conntrack entry with this original tuple whose reply comes from another
    socket than `fixed` (i.e. one that NATs it); None when no entry rewrites it."""
    for ct in conntrack:
        reply = (ct.get("extra") or {}).get("reply") or {}
        if reply and _tuple(ct) == orig and (reply.get("saddr"), reply.get("sport")) != fixed:
            return ct
    return None


def through_nat(packet: Mapping[str, Any],
                conntrack: Iterable[Mapping[str, Any]],
                max_hops: int = 4) -> tuple[Endpoint, Endpoint]:
    """(the socket that sent `packet`, the socket it is for), seen through NAT.

    A packet in the reply direction of a NATed connection was sent by the socket in
    conntrack's reply source; one in the original direction is for that socket. NATs
    chain (a node DNATs a Service VIP to a pod, whose PREROUTING REDIRECTs it to an
    agent), so each side is followed up to `max_hops` entries. Each endpoint is
    (netns, address, port); the netns is where the last NAT entry lives (the packet's
    own netns when no entry rewrites it).
    """
    cts = list(conntrack)
    here = packet.get("netns") or ""
    s_addr, s_port, d_addr, d_port = _tuple(packet)
    sender: Endpoint = (here, s_addr, s_port)
    receiver: Endpoint = (here, d_addr, d_port)
    for _ in range(max_hops):  # a reply, un-NATed on its way out: who really sent it
        ct = _hop(cts, (d_addr, d_port, sender[1], sender[2]), (sender[1], sender[2]))
        if ct is None:
            break
        reply = ct["extra"]["reply"]
        sender = (ct.get("netns") or here, reply.get("saddr"), reply.get("sport"))
    for _ in range(max_hops):  # to be NATed on its way in: who will really get it
        ct = _hop(cts, (s_addr, s_port, receiver[1], receiver[2]), (receiver[1], receiver[2]))
        if ct is None:
            break
        reply = ct["extra"]["reply"]
        receiver = (ct.get("netns") or here, reply.get("saddr"), reply.get("sport"))
    return sender, receiver


@dataclass(frozen=True)
class Attribution:
    """Who sent a packet and who it is for: process names (None: not one the lab knows)
    and the sockets behind them, seen through NAT."""

    sender: str | None
    receiver: str | None
    sent_by: Endpoint
    meant_for: Endpoint


class Senders:
    """Names the process behind each end of the packets of one trace, from the kernel.

    - a socket bound to a listening port belongs to the listener's process;
    - a socket that opened a connection (its SYN was seen) keeps the name it had then;
    - a socket carrying the proxy mark (mesh.PROXY_MARK) belongs to the proxy serving
      that netns (`proxies`), since only proxies set it;
    - anything else is None, for the caller to name (the pod's own workload).

    Feed packets in time order: a reply is attributed through the SYN that opened it.
    """

    def __init__(self, listeners: Iterable[Mapping[str, Any]],
                 conntrack: Iterable[Mapping[str, Any]], addresses: Mapping[str, str],
                 proxies: Mapping[str, str]) -> None:
        self.listening = {(x["netns"], x["port"]): x.get("process") for x in listeners}
        self.conntrack = list(conntrack)
        self.addresses = dict(addresses)  # a pod's IP -> its netns: its sockets live there
        self.proxies = dict(proxies)
        self.opened: dict[tuple[str, int], str | None] = {}

    def attribute(self, packet: Mapping[str, Any]) -> Attribution:
        sent_by, meant_for = through_nat(packet, self.conntrack)
        netns, addr, port = sent_by
        sender = self.listening.get((netns, port)) or self.opened.get((addr, port))
        if sender is None and (packet.get("mark") or 0) & mesh.PROXY_MARK_MASK == mesh.PROXY_MARK:
            sender = self.proxies.get(netns)
        flags = packet.get("tcp_flags") or ""
        if "S" in flags and "A" not in flags:
            self.opened[(addr, port)] = sender  # its replies go back to the same process
        r_ns, r_addr, r_port = meant_for
        r_ns = self.addresses.get(r_addr, r_ns)
        receiver = self.listening.get((r_ns, r_port)) or self.opened.get((r_addr, r_port))
        return Attribution(sender, receiver, sent_by, (r_ns, r_addr, r_port))
