"""What crossed a link: copies of TCP segments taken with AF_PACKET inside a netns.

The proof that traffic was (or was not) encrypted on the wire is the bytes on the
wire: a request path readable in a segment, or only segments to the HBONE port. The
sniffer needs no rule in the netns, so watching cannot change what is watched.
"""

from __future__ import annotations

from types import TracebackType
from typing import Iterable

from netlab.kernel import netns as nsmod
from netlab.kernel.afpacket import Segment, Sniffer, open_socket


class Wire:
    """Collect segments touching `ports` on `netns`' interfaces (all of them, or `ifname`)
    for the duration of a `with` block; `segments` holds them afterwards."""

    def __init__(self, netns: str, ports: Iterable[int] = (), ifname: str | None = None) -> None:
        self.netns, self.ports, self.ifname = netns, tuple(ports), ifname
        self.segments: list[Segment] = []
        self._sniffer: Sniffer | None = None

    def __enter__(self) -> "Wire":
        with nsmod.entered(self.netns):
            sock = open_socket()  # the socket stays in the netns it was opened in
        self._sniffer = Sniffer(sock, self.ports).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._sniffer is not None
        got = self._sniffer.stop()
        self.segments = [s for s in got if self.ifname is None or s.ifname == self.ifname]

    def to(self, addr: str, port: int) -> list[Segment]:
        """The segments sent to addr:port."""
        return [s for s in self.segments if (s.daddr, s.dport) == (addr, port)]

    def carrying(self, needle: bytes) -> list[Segment]:
        """The segments whose payload holds `needle` in clear text."""
        return [s for s in self.segments if needle in s.payload]
