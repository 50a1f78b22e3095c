"""afpacket.parse on frames crafted with scapy, as an AF_PACKET socket would deliver them (no root)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from netlab.kernel import afpacket as sniff


def frame(*layers: Packet) -> bytes:
    # Explicit MACs: scapy would otherwise look up a route to fill them in.
    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    for layer in layers:
        pkt = pkt / layer
    return bytes(pkt)


def test_decodes_addresses_ports_flags_and_payload() -> None:
    raw = frame(IP(src="10.1.0.5", dst="10.1.0.6"),
                TCP(sport=43512, dport=9080, flags="PA"), Raw(b"GET / HTTP/1.1\r\n\r\n"))
    seg = sniff.parse(raw, "eth0")
    assert seg == sniff.Segment("eth0", "10.1.0.5", 43512, "10.1.0.6", 9080, "PA",
                                b"GET / HTTP/1.1\r\n\r\n")
    assert seg.to_dict(payload_chars=3) == {
        "ifname": "eth0", "saddr": "10.1.0.5", "sport": 43512, "daddr": "10.1.0.6",
        "dport": 9080, "flags": "PA", "payload": "GET", "bytes": 18}


@pytest.mark.parametrize("flags, letters", [("S", "S"), ("SA", "SA"), ("FA", "FA"),
                                            ("R", "R"), ("SAUEC", "SA")])
def test_flags_are_reported_as_FSRPA_letters_in_order(flags: str, letters: str) -> None:
    seg = sniff.parse(frame(IP(src="1.1.1.1", dst="2.2.2.2"), TCP(flags=flags)), "lo")
    assert seg is not None and seg.flags == letters and seg.payload == b""


def test_ethernet_padding_of_a_short_frame_is_not_payload() -> None:
    raw = frame(IP(src="10.0.0.1", dst="10.0.0.2"), TCP(flags="PA"), Raw(b"hi"))
    padded = raw + b"\x00" * (60 - len(raw))  # the 60-byte minimum a NIC pads to
    seg = sniff.parse(padded, "veth0")
    assert seg is not None and seg.payload == b"hi"


def test_ip_and_tcp_options_move_the_payload() -> None:
    raw = frame(IP(src="10.0.0.1", dst="10.0.0.2", options=[b"\x01\x01\x01\x00"]),
                TCP(sport=1, dport=2, options=[("MSS", 1460), ("NOP", None), ("WScale", 7)]),
                Raw(b"data"))
    seg = sniff.parse(raw, "veth0")
    assert seg is not None and (seg.sport, seg.dport, seg.payload) == (1, 2, b"data")


def test_payload_that_looks_like_another_protocol_is_kept_as_sent() -> None:
    http = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"  # port 80, which scapy may dissect
    seg = sniff.parse(frame(IP(src="10.0.0.1", dst="10.0.0.2"), TCP(sport=80), Raw(http)), "lo")
    assert seg is not None and seg.payload == http


@pytest.mark.parametrize("layers", [
    (IP(src="10.0.0.1", dst="10.0.0.2"), UDP(sport=53, dport=53), Raw(b"dns")),
    (IPv6(src="fd00::1", dst="fd00::2"), TCP()),
    (ARP(psrc="10.0.0.1", pdst="10.0.0.2"),),
    (IP(src="10.0.0.1", dst="10.0.0.2", frag=3), Raw(b"x" * 40)),  # a later fragment
])
def test_anything_but_ipv4_tcp_is_none(layers: tuple[Packet, ...]) -> None:
    assert sniff.parse(frame(*layers), "eth0") is None


def test_a_frame_cut_inside_the_tcp_header_is_none() -> None:
    raw = frame(IP(src="10.0.0.1", dst="10.0.0.2"), TCP(sport=1, dport=2))
    assert sniff.parse(raw[:14 + 20 + 10], "eth0") is None


def test_importing_the_module_does_not_import_scapy() -> None:
    # Labs import sniff without sniffing; scapy's 0.2 s import is paid on first decode.
    code = "import sys, netlab.kernel.afpacket; print('scapy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("total_len", [0, 60_000])  # BIG TCP's 0; a GSO packet cut by the read
def test_payload_runs_to_the_end_of_the_read_when_the_ip_length_cannot_say(
        total_len: int) -> None:
    raw = frame(IP(src="10.0.0.1", dst="10.0.0.2", len=total_len), TCP(), Raw(b"abc"))
    seg = sniff.parse(raw, "lo")
    assert seg is not None and seg.payload == b"abc"


class _QueuedFrames:
    """Stands in for an AF_PACKET socket: a datagram socketpair whose frames arrive as
    received on `eth0`, so select() and recvfrom() behave as on the real socket."""

    def __init__(self) -> None:
        import socket
        self.rx, self.tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    def fileno(self) -> int:
        return self.rx.fileno()

    def recvfrom(self, n: int) -> tuple[bytes, tuple[str, int, int]]:
        return self.rx.recv(n), ("eth0", 0x0800, 0)  # pkttype 0: PACKET_HOST, received

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


def test_stop_reads_every_frame_queued_before_it() -> None:
    """A witness stopped right after its client returned still holds the client's last
    segments: they were queued on the socket, only not read yet."""
    sock = _QueuedFrames()
    sniffer = sniff.Sniffer(sock, [8080]).start()  # type: ignore[arg-type]
    frames = [frame(IP(src="10.0.0.1", dst="10.0.0.2"), TCP(sport=40000 + i, dport=8080, flags="PA"),
                    Raw(b"GET /%d" % i)) for i in range(200)]
    for f in frames:
        sock.tx.send(f)
    got = sniffer.stop()
    assert [s.sport for s in got] == [40000 + i for i in range(200)]
