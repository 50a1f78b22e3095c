"""Sockets the way in-pod proxies make them: inside a pod's netns, marked, sometimes spoofing.

Why in-process setns: a socket stays in the namespace it was created in, so one
proxy process can own listeners in every pod on its node (ztunnel's in-pod mode gets
the netns fds from istio-cni; we open /run/netns/<name> ourselves). Every socket
carries SO_MARK 0x539 (mesh.PROXY_MARK), which the capture rules exempt, so a
proxy's own traffic is never captured again (mesh-facts §1, §3).
"""

from __future__ import annotations

import socket
import struct
from contextlib import nullcontext
from typing import ContextManager

from netlab import mesh
from netlab.kernel import netns as nsmod

SO_MARK = 36
IP_TRANSPARENT = 19
IP_FREEBIND = 15
SO_ORIGINAL_DST = 80
_pod_netns = nsmod.KeptOpen()  # a proxy process lives exactly as long as the lab


def _in(netns: str | None) -> ContextManager[object]:
    """Inside `netns` (kept open: per-connection sockets are made there); None: our own netns."""
    return _pod_netns.entered(netns) if netns else nullcontext()


def listener(netns: str, port: int, transparent: bool, backlog: int = 512,
             mark: int = mesh.PROXY_MARK) -> socket.socket:
    """A marked listener on 0.0.0.0:port inside `netns` (IP_TRANSPARENT under TPROXY capture).

    proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only
    when `sock.proto == IPPROTO_TCP`, and without it Nagle holds HBONE's second small
    frame for the peer's 40 ms delayed ACK.
    """
    with nsmod.entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
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


def marked_socket(netns: str | None, kind: socket.SocketKind = socket.SOCK_STREAM,
                  proto: int = socket.IPPROTO_TCP) -> socket.socket:
    """A marked, non-blocking, unbound socket made in `netns` (None: the proxy's own netns)."""
    with _in(netns):
        s = socket.socket(socket.AF_INET, kind, proto)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, mesh.PROXY_MARK)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def outbound_socket(netns: str) -> socket.socket:
    """An unconnected, marked socket in the source pod's netns (no spoofing: pod IP as source)."""
    s = marked_socket(netns)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def spoofed_socket(netns: str, client_ip: str) -> socket.socket:
    """A marked socket in the destination pod's netns bound to the client's IP.

    IP_TRANSPARENT + IP_FREEBIND let us bind an address the pod does not own; the
    in-pod connmark rules and the table-100 local route bring the app's replies back.
    """
    s = marked_socket(netns)
    try:
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((client_ip, 0))
    except BaseException:
        s.close()
        raise
    return s
