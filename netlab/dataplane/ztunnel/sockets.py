"""Sockets the way ztunnel makes them: inside a pod's netns, marked, sometimes spoofing.

Why in-process setns: a socket stays in the namespace it was created in, so one
ztunnel process can own listeners in every pod on its node (ztunnel's in-pod mode
gets the netns fds from istio-cni; we open /run/netns/<name> ourselves).
"""

from __future__ import annotations

import socket
import struct

from netlab import mesh
from netlab.kernel import netns as nsmod

SO_MARK = 36
IP_TRANSPARENT = 19
IP_FREEBIND = 15
SO_ORIGINAL_DST = 80
ZTUNNEL_MARK = mesh.PROXY_MARK
_pod_netns = nsmod.KeptOpen()  # this process lives exactly as long as the lab


def listener(netns: str, port: int, transparent: bool, backlog: int = 512) -> socket.socket:
    """A marked listener on 0.0.0.0:port inside `netns` (IP_TRANSPARENT for TPROXY mode).

    proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only
    when `sock.proto == IPPROTO_TCP`, and without it Nagle holds HBONE's second small
    frame for the peer's 40 ms delayed ACK.
    """
    with nsmod.entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, ZTUNNEL_MARK)
        if transparent:
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        s.bind(("0.0.0.0", port))
        s.listen(backlog)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """Where the client meant to go: conntrack's pre-NAT tuple, else the local address (TPROXY)."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port, packed = struct.unpack_from("!2xH4s", raw)
        return socket.inet_ntoa(packed), port
    except OSError:
        ip, port = sock.getsockname()[:2]
        return ip, port


def outbound_socket(netns: str) -> socket.socket:
    """An unconnected, marked socket in the source pod's netns (no spoofing: pod IP as source)."""
    with _pod_netns.entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setsockopt(socket.SOL_SOCKET, SO_MARK, ZTUNNEL_MARK)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    return s


def spoofed_socket(netns: str, client_ip: str) -> socket.socket:
    """A marked socket in the destination pod's netns bound to the client's IP.

    IP_TRANSPARENT + IP_FREEBIND let us bind an address the pod does not own; the
    in-pod connmark rules and the table-100 local route bring the app's replies back.
    """
    with _pod_netns.entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, ZTUNNEL_MARK)
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((client_ip, 0))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s
