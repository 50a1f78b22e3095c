"""Copies of TCP segments from an AF_PACKET socket: mirror mode, and the lab's wire probe.

AF_PACKET sees packets before netfilter on receive and after it on send, so it needs no
rule in the netns and cannot disturb the flow it watches: that is why mirrord's mirror
mode survives a mesh that breaks steal. The socket belongs to the netns it was opened
in (open it inside `netns.entered` or in a process spawned there).
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
ETH_HLEN = 14  # veth and lo both carry an Ethernet header on AF_PACKET


@dataclass(frozen=True)
class Segment:
    ifname: str
    saddr: str
    sport: int
    daddr: str
    dport: int
    flags: str
    payload: bytes

    def to_dict(self, payload_chars: int = 120) -> dict[str, object]:
        d = asdict(self)
        d["payload"] = self.payload[:payload_chars].decode("latin-1")
        d["bytes"] = len(self.payload)
        return d


_FLAG_LETTERS = (("F", 0x01), ("S", 0x02), ("R", 0x04), ("P", 0x08), ("A", 0x10))


def parse(frame: bytes, ifname: str) -> Segment | None:
    """Ethernet + IPv4 + TCP -> Segment; anything else -> None."""
    if len(frame) < ETH_HLEN + 20 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
        return None
    ip = frame[ETH_HLEN:]
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    if ip[9] != socket.IPPROTO_TCP or len(ip) < ihl + 20:
        return None
    tcp = ip[ihl:total]
    sport, dport = struct.unpack("!HH", tcp[:4])
    off = (tcp[12] >> 4) * 4
    flags = "".join(c for c, bit in _FLAG_LETTERS if tcp[13] & bit)
    return Segment(ifname, socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]),
                   dport, flags, bytes(tcp[off:]))


def open_socket() -> socket.socket:
    """An AF_PACKET socket in the *calling thread's* netns, all interfaces."""
    return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))


class Sniffer:
    """Collect TCP segments touching `ports` (any port when empty) in a background thread.

    Outgoing copies are skipped: on `lo` every packet shows up twice (sent and received),
    and on a veth the received copy is the one that proves the packet arrived.
    """

    def __init__(self, sock: socket.socket, ports: Iterable[int] = (),
                 on_segment: Callable[[Segment], None] | None = None) -> None:
        self.sock = sock
        self.ports = set(ports)
        self.segments: list[Segment] = []
        self.on_segment = on_segment
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netlab-sniff", daemon=True)

    def start(self) -> "Sniffer":
        self._thread.start()
        return self

    def stop(self) -> list[Segment]:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        with self._lock:
            return list(self.segments)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.sock], [], [], 0.1)[0]:
                continue
            try:
                frame, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            # addr[0] is the interface name, resolved by the kernel through this socket,
            # so it is the name in the socket's netns whichever thread reads it.
            seg = parse(frame, addr[0])
            if seg is None or (self.ports and not {seg.sport, seg.dport} & self.ports):
                continue
            with self._lock:
                self.segments.append(seg)
            if self.on_segment:
                self.on_segment(seg)
