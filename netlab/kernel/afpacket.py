"""Copies of TCP segments from an AF_PACKET socket: mirror mode, and the labs' wire witness.

Why here, in kernel: two rooms read packets this way, the steal agent's mirror mode
(dataplane) and the wire witness (observe/witness/wire.py); this is the lowest layer
both may import. It only reads: it opens no rule and changes nothing in the netns.

AF_PACKET sees packets before netfilter on receive and after it on send, so it needs no
rule in the netns and cannot disturb the flow it watches: that is why mirrord's mirror
mode survives a mesh that breaks steal. The socket belongs to the netns it was opened
in (open it inside `netns.entered` or in a process spawned there).
"""

from __future__ import annotations

import functools
import select
import socket
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from scapy.packet import Packet

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ETH_HLEN = 14  # veth and lo both carry an Ethernet header on AF_PACKET
MAX_DRAIN = 10_000  # frames read after stop() at most, on a link that never goes quiet


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


_FLAG_LETTERS = "FSRPA"  # the flags a Segment reports, in this order


@functools.cache
def _layers() -> tuple[type[Packet], type[Packet], type[Packet]]:
    """scapy's Ether, IP and TCP, imported on first use.

    Importing scapy costs about 0.2 s and reads the interfaces and routes of the
    netns it runs in; labs import this module without ever sniffing, so they should
    pay neither. Only these classes are used: scapy decodes bytes from our own
    AF_PACKET socket and never opens a socket of its own.
    """
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    return Ether, IP, TCP


def preload() -> None:
    """Import scapy's layers now, e.g. in a thread while a lab builds, so the first
    Sniffer does not wait for them."""
    _layers()


def parse(frame: bytes, ifname: str) -> Segment | None:
    """Ethernet + IPv4 + TCP -> Segment; anything else (or a truncated frame) -> None.

    The payload is sliced from the frame by scapy's header and total lengths, not
    rebuilt from scapy's layers: it stays the bytes that crossed the wire, without the
    Ethernet padding of short frames, whatever scapy thinks the payload's protocol is.
    """
    ether_cls, ip_cls, tcp_cls = _layers()
    ip = ether_cls(frame).payload
    if type(ip) is not ip_cls or type(ip.payload) is not tcp_cls:
        return None  # not IPv4, not TCP, a later fragment, or cut short inside a header
    tcp = ip.payload
    start = ETH_HLEN + ip.ihl * 4 + tcp.dataofs * 4
    # A GSO super-packet may be longer than the read, and BIG TCP writes 0 as its total
    # length: then the payload runs to the end of what was read.
    end = min(ETH_HLEN + ip.len, len(frame)) if ip.len else len(frame)
    if start > end:
        return None
    flags = "".join(c for c in _FLAG_LETTERS if c in tcp.flags)
    return Segment(ifname, ip.src, tcp.sport, ip.dst, tcp.dport, flags, bytes(frame[start:end]))


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
        _layers()  # pay scapy's import now, not while the first packets queue up
        self._thread.start()
        return self

    def stop(self) -> list[Segment]:
        """Stop, once every frame already queued on the socket is read: a segment that
        arrived just before (the last request a client sent before it returned) counts."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        with self._lock:
            return list(self.segments)

    def _run(self) -> None:
        drained = 0
        while True:
            stopping = self._stop.is_set()
            if not select.select([self.sock], [], [], 0 if stopping else 0.1)[0]:
                if stopping:
                    return  # the queue is empty: everything that came before stop() is read
                continue
            if stopping:
                drained += 1
                if drained > MAX_DRAIN:
                    return  # a link that never goes quiet: stop anyway
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
