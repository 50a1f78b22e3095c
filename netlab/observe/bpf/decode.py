"""trace.c's records (struct event_t) and how they become Events.

Why decoding is separate from the drain: the drain thread only copies raw records
out of the ring (ring.py); turning them into Event objects happens when someone
reads the events (Tracer.events / wait_for / stop), off the packet path. Decoding is
pure given its tables, so it is tested without a kernel.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from typing import Any, Callable

from netlab.observe.events import Event

KINDS = {1: "rx", 2: "tx", 3: "drop", 4: "retransmit_synack", 5: "send_reset",
         6: "recv_reset", 7: "sock_state"}
DEV_FROM = {1: "skb_dev", 2: "dst_dev", 3: "sock"}
# include/net/tcp_states.h: part of the socket ABI (ss(8) prints these), stable.
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
              5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
              10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
ETHERTYPES = {0x0800: "ipv4", 0x0806: "arp", 0x86DD: "ipv6"}
PROTOS = {6: "tcp", 17: "udp", 1: "icmp"}


class RawEvent(ctypes.Structure):
    """Mirror of struct event_t in trace.c (same order, natural alignment)."""

    _fields_ = [
        ("ts", ctypes.c_uint64), ("skbaddr", ctypes.c_uint64), ("location", ctypes.c_uint64),
        ("netns", ctypes.c_uint32), ("ifindex", ctypes.c_uint32), ("kind", ctypes.c_uint32),
        ("reason", ctypes.c_uint32), ("mark", ctypes.c_uint32), ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32), ("seq", ctypes.c_uint32), ("ack", ctypes.c_uint32),
        ("len", ctypes.c_uint32), ("oldstate", ctypes.c_int32), ("newstate", ctypes.c_int32),
        ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16), ("proto", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8), ("has_tuple", ctypes.c_uint8),
        ("dev_from", ctypes.c_uint8), ("ifname", ctypes.c_char * 16),
        ("l3proto", ctypes.c_uint16), ("ip_id", ctypes.c_uint16), ("pad1", ctypes.c_uint32),
    ]


RECORD_SIZE = ctypes.sizeof(RawEvent)


def tcp_flags(bits: int) -> str:
    """tcpdump's letters, in its order: S F R P then A (e.g. "SA", "FA", "R")."""
    out = ""
    for bit, letter in ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x20, "U"),
                        (0x40, "E"), (0x80, "W"), (0x10, "A")):
        if bits & bit:
            out += letter
    return out or "."


def _no_ksym(addr: int) -> str | None:
    return None


class Decoder:
    """Turns records into Events with the run's tables: drop-reason names, interface
    names per (netns, ifindex), netns names per inode, a kernel symbol lookup for
    drop locations (bcc's, which still works after the programs are unloaded), and
    which devices are bridges (a drop there says `dev_kind: bridge`)."""

    def __init__(self, reasons: dict[int, str] | None = None,
                 ifnames: dict[tuple[str, int], str] | None = None,
                 inode_to_name: dict[int, str] | None = None,
                 ksym: Callable[[int], str | None] = _no_ksym,
                 bridges: set[tuple[str, int]] | None = None) -> None:
        self.reasons = reasons if reasons is not None else {}
        self.ifnames = ifnames if ifnames is not None else {}
        self.inode_to_name = inode_to_name if inode_to_name is not None else {}
        self.bridges = bridges if bridges is not None else set()  # (netns, ifindex)
        self._ksym_lookup = ksym
        self._ksyms: dict[int, str | None] = {}
        self._addrs: dict[int, str] = {}

    def _ksym(self, addr: int) -> str | None:
        if not addr:
            return None
        if addr not in self._ksyms:
            self._ksyms[addr] = self._ksym_lookup(addr)
        return self._ksyms[addr]

    def _addr(self, packed: int) -> str:
        s = self._addrs.get(packed)
        if s is None:
            s = self._addrs[packed] = socket.inet_ntoa(struct.pack("<I", packed))
        return s

    def record(self, rec: bytes) -> Event:
        """One record as copied from the ring (without its ring header)."""
        return self.decode(RawEvent.from_buffer_copy(rec))

    def decode(self, raw: RawEvent) -> Event:
        kind = KINDS.get(raw.kind, str(raw.kind))
        ns_name = self.inode_to_name.get(raw.netns)
        ev = Event(ts_ns=raw.ts, source="bpf", kind=kind, netns_inode=raw.netns,
                   netns=ns_name)
        extra: dict[str, Any] = {}
        if raw.dev_from in (1, 2):
            ev.ifindex = raw.ifindex
            ev.ifname = (self.ifnames.get((ns_name or "", raw.ifindex))
                         or raw.ifname.decode(errors="replace") or None)
            if raw.dev_from == 2:
                extra["dev_from"] = "route"  # skb had no device yet (OUTPUT hook)
        if raw.has_tuple:
            ev.proto = PROTOS.get(raw.proto, str(raw.proto))
            ev.saddr = self._addr(raw.saddr)
            ev.daddr = self._addr(raw.daddr)
            if raw.proto in (6, 17):
                ev.sport, ev.dport = raw.sport, raw.dport
        if raw.proto == 6 and kind in ("rx", "tx", "drop", "send_reset") and raw.tcp_flags:
            ev.tcp_flags = tcp_flags(raw.tcp_flags)
            if kind != "send_reset":
                ev.seq, ev.ack = raw.seq, raw.ack
        if kind in ("rx", "tx", "drop"):
            ev.mark = raw.mark
            if not raw.has_tuple:
                extra["ethertype"] = ETHERTYPES.get(raw.l3proto, hex(raw.l3proto))
            extra["len"] = raw.len
            extra["skb"] = hex(raw.skbaddr)
            if raw.has_tuple:
                extra["ip_id"] = raw.ip_id
        if kind == "drop":
            ev.reason = self.reasons.get(raw.reason, f"reason_{raw.reason}")
            if raw.dev_from == 1 and (ns_name or "", raw.ifindex) in self.bridges:
                extra["dev_kind"] = "bridge"
            loc = self._ksym(raw.location)
            if loc:
                extra["location"] = loc
        if kind == "sock_state":
            extra["oldstate"] = TCP_STATES.get(raw.oldstate, str(raw.oldstate))
            extra["newstate"] = TCP_STATES.get(raw.newstate, str(raw.newstate))
        if kind == "send_reset":
            extra["sk_state"] = TCP_STATES.get(raw.oldstate, "none")  # 0: no socket
        ev.extra = extra
        return ev
