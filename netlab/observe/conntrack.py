"""Conntrack collector: ctnetlink NEW and DESTROY events from every scoped netns.

Why a raw netlink socket and a small parser of our own: one NETLINK_NETFILTER socket
opened inside `netns.entered` keeps listening in that namespace without a process per
namespace, and reading it costs one recv per batch of messages. Decoding (a few struct
reads per attribute) is deferred to flush(), which the Tracer calls when its events
are read, so a busy connection rate costs the reader thread only the recv. The reply
tuple is the point: after REDIRECT/DNAT it names the rewritten destination
(app->VIP:80 shows a reply from pod:8080), which is how the timeline joins a client's
tuple to the one the server sees.

Only the NEW and DESTROY groups are joined: NEW carries both tuples (the NAT join) and
DESTROY closes the entry; the UPDATE group (every TCP state change of every entry,
several per connection) is not subscribed, see docs/events.md.

Conntrack only tracks in a netns whose netfilter rules need it (a nat table, a
conntrack/state match). A netns without such rules yields no events: that is the
kernel's lazy hook registration, not a collector fault.

When: a message is read up to 50 ms (the poll period) after the kernel made it, so the
read time would put a REDIRECT after the handshake it rewrote. Linux >= 6.14 stamps
every event with CTA_TIMESTAMP_EVENT (wall clock, ns) when the netns has
`net.netfilter.nf_conntrack_timestamp=1` and someone listens to events; that sysctl is
per netns, so the collector turns it on in each scoped netns for the trace and puts the
old value back at stop. The stamp is taken when the entry is allocated, i.e. when the
first packet meets conntrack, and becomes the event's `ts_ns` (converted to the
monotonic clock); `extra.ts_from` says `kernel`, or `read` on an older kernel (then
netlab.observe.order places the event by its first packet).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time
from collections import deque
from typing import Any, Iterator

from netlab.kernel import netns as nsmod
from netlab.observe.collector import Capability, Collector, Scope, Sink, yield_cpu
from netlab.observe.events import Event

NETLINK_NETFILTER = 12
# nfnetlink groups NEW=1, UPDATE=2, DESTROY=3 -> bitmask bits 0..2. NEW + DESTROY.
GROUP_NEW, GROUP_UPDATE, GROUP_DESTROY = 0b001, 0b010, 0b100
GROUPS = GROUP_NEW | GROUP_DESTROY
POLL_S = 0.05  # read period of the sockets
RCVBUF = 8 << 20  # SO_RCVBUFFORCE: a burst of NEW events must not overrun the socket
SO_RCVBUFFORCE = 33
NLM_F_CREATE = 0x400
MSG_NEW, MSG_DELETE = 0, 2
NFNL_SUBSYS_CTNETLINK = 1
NLMSG_ERROR, NLMSG_OVERRUN = 2, 4
# enum ctattr_type / ctattr_tuple / ctattr_ip / ctattr_l4proto / ctattr_protoinfo
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_MARK, CTA_ID, CTA_ZONE = 8, 12, 18
CTA_TIMESTAMP, CTA_TIMESTAMP_EVENT = 20, 27  # the latter since Linux 6.14
CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP = 1, 2
TIMESTAMP_SYSCTL = "net/netfilter/nf_conntrack_timestamp"
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1
# enum tcp_conntrack (uapi nf_conntrack_tcp.h)
CT_TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
                 "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")
# enum ip_conntrack_status bits (uapi nf_conntrack_common.h)
CT_STATUS = ("EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT", "DST_NAT",
             "SEQ_ADJUST", "SRC_NAT_DONE", "DST_NAT_DONE", "DYING", "FIXED_TIMEOUT",
             "TEMPLATE", "UNTRACKED", "HELPER", "OFFLOAD", "HW_OFFLOAD")
PROTOS = {6: "tcp", 17: "udp", 1: "icmp"}

_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_BE16, _BE32, _BE64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")


def realtime_offset() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC now, in ns: turns the kernel's wall-clock
    conntrack stamps into the clock every other event uses."""
    return time.time_ns() - time.monotonic_ns()


def _attrs(data: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """Netlink attributes in data[start:end] -> {type: (payload start, payload end)}."""
    out: dict[int, tuple[int, int]] = {}
    pos = start
    while pos + 4 <= end:
        length, atype = _NLA.unpack_from(data, pos)
        if length < 4:
            break
        out[atype & 0x3FFF] = (pos + 4, pos + length)  # strip NESTED/BYTEORDER bits
        pos += (length + 3) & ~3
    return out


def _tuple(data: bytes, span: tuple[int, int] | None) -> dict[str, Any]:
    if span is None:
        return {}
    out: dict[str, Any] = {}
    top = _attrs(data, *span)
    ip = top.get(CTA_TUPLE_IP)
    if ip is not None:
        a = _attrs(data, *ip)
        for key, v4, v6 in (("saddr", CTA_IP_V4_SRC, CTA_IP_V6_SRC),
                            ("daddr", CTA_IP_V4_DST, CTA_IP_V6_DST)):
            if v4 in a:
                out[key] = socket.inet_ntop(socket.AF_INET, data[a[v4][0]:a[v4][0] + 4])
            elif v6 in a:
                out[key] = socket.inet_ntop(socket.AF_INET6, data[a[v6][0]:a[v6][0] + 16])
    proto = top.get(CTA_TUPLE_PROTO)
    if proto is not None:
        p = _attrs(data, *proto)
        if CTA_PROTO_NUM in p:
            num = data[p[CTA_PROTO_NUM][0]]
            out["proto"] = PROTOS.get(num, str(num))
        if CTA_PROTO_SRC_PORT in p:
            out["sport"] = _BE16.unpack_from(data, p[CTA_PROTO_SRC_PORT][0])[0]
        if CTA_PROTO_DST_PORT in p:
            out["dport"] = _BE16.unpack_from(data, p[CTA_PROTO_DST_PORT][0])[0]
    return out


def status_names(bits: int) -> list[str]:
    return [name for i, name in enumerate(CT_STATUS) if bits & (1 << i)]


def messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(nlmsg type, flags, start, end) for each netlink message in one datagram."""
    pos = 0
    while pos + _NLMSG.size <= len(data):
        length, mtype, flags, _seq, _pid = _NLMSG.unpack_from(data, pos)
        if length < _NLMSG.size:
            break
        yield mtype, flags, pos, min(pos + length, len(data))
        pos += (length + 3) & ~3


def decode(data: bytes, mtype: int, flags: int, start: int, end: int, netns_name: str,
           inode: int, ts_ns: int, clock_offset: int | None = None) -> Event | None:
    """One ctnetlink message -> Event (None for messages that are not conntrack events).

    `ts_ns` is when the message was read; with `clock_offset` (realtime_offset()) a
    kernel event stamp, when the message has one, replaces it."""
    if mtype >> 8 != NFNL_SUBSYS_CTNETLINK:
        return None
    if mtype & 0xFF == MSG_DELETE:
        kind = "ct_destroy"
    elif mtype & 0xFF == MSG_NEW:
        kind = "ct_new" if flags & NLM_F_CREATE else "ct_update"
    else:
        return None
    a = _attrs(data, start + _NLMSG.size + 4, end)  # + struct nfgenmsg
    orig = _tuple(data, a.get(CTA_TUPLE_ORIG))
    reply = _tuple(data, a.get(CTA_TUPLE_REPLY))

    def be(attr: int, st: struct.Struct = _BE32) -> int | None:
        return st.unpack_from(data, a[attr][0])[0] if attr in a else None

    extra: dict[str, Any] = {"reply": reply, "zone": be(CTA_ZONE, _BE16) or 0,
                             "id": be(CTA_ID), "ts_from": "read"}
    stamp = be(CTA_TIMESTAMP_EVENT, _BE64)
    if stamp and clock_offset is not None:
        extra["read_ns"] = ts_ns
        ts_ns = stamp - clock_offset
        extra["ts_from"] = "kernel"
    if CTA_TIMESTAMP in a and clock_offset is not None:  # DESTROY: the entry's lifetime
        t = _attrs(data, *a[CTA_TIMESTAMP])
        for key, attr in (("start_ns", CTA_TIMESTAMP_START), ("stop_ns", CTA_TIMESTAMP_STOP)):
            if attr in t:
                extra[key] = _BE64.unpack_from(data, t[attr][0])[0] - clock_offset
    status = be(CTA_STATUS)
    if status is not None:
        extra["status"] = status_names(status)
    info = a.get(CTA_PROTOINFO)
    if info is not None:
        tcp = _attrs(data, *info).get(CTA_PROTOINFO_TCP)
        if tcp is not None:
            st_span = _attrs(data, *tcp).get(CTA_PROTOINFO_TCP_STATE)
            if st_span is not None:
                st = data[st_span[0]]
                extra["state"] = CT_TCP_STATES[st] if st < len(CT_TCP_STATES) else str(st)
    return Event(ts_ns=ts_ns, source="conntrack", kind=kind, netns_inode=inode,
                 netns=netns_name, proto=orig.get("proto"), saddr=orig.get("saddr"),
                 sport=orig.get("sport"), daddr=orig.get("daddr"), dport=orig.get("dport"),
                 mark=be(CTA_MARK) or 0, extra=extra)


def _matches(ev: Event, scope: Scope) -> bool:
    """Scope filter on either tuple: the port the app dialled or the one NAT chose."""
    tuples = [ev.extra.get("reply", {}), {"sport": ev.sport, "dport": ev.dport,
                                           "saddr": ev.saddr, "daddr": ev.daddr}]
    if scope.port and not any(scope.port in (t.get("sport"), t.get("dport")) for t in tuples):
        return False
    if scope.address and not any(scope.address in (t.get("saddr"), t.get("daddr"))
                                 for t in tuples):
        return False
    return True


def _sysctl(key: str, value: str | None = None) -> str | None:
    """Read (or write) a sysctl of the calling thread's netns; None when it does not exist."""
    path = f"/proc/sys/{key}"
    if value is None:
        try:
            with open(path) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None
    with open(path, "w") as f:
        f.write(value)
    return value


class ConntrackCollector(Collector):
    name = "conntrack"

    def __init__(self, groups: int = GROUPS) -> None:
        self.groups = groups
        self._socks: list[tuple[socket.socket, str, int]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._raw: deque[tuple[bytes, str, int, int]] = deque()
        self._counters = {"events": 0, "lost": 0, "filtered": 0}
        self._notify: Any = None
        self._stash: list[Event] = []
        self._stamps_restore: dict[str, str] = {}  # netns -> sysctl value before the trace

    def can_run(self) -> Capability:
        if os.geteuid() != 0:
            return Capability(False, "needs root (CAP_NET_ADMIN) to join conntrack groups")
        try:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            s.close()
        except OSError as e:
            return Capability(False, f"no NETLINK_NETFILTER socket: {e}")
        return Capability(True, "ctnetlink event groups NEW/DESTROY on a netlink socket "
                          "per netns")

    def start(self, scope: Scope, sink: Sink) -> None:
        self._scope, self._sink = scope, sink
        self._notify = getattr(sink, "notify", None)
        try:
            for name, ino in scope.netns.items():
                with nsmod.entered(name):
                    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                         NETLINK_NETFILTER)
                self._socks.append((sock, name, ino))
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                sock.bind((0, self.groups))
                sock.setblocking(False)
                self._stamp_events(name)
        except BaseException:
            self.stop()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._read, name="netlab-conntrack",
                                        daemon=True)
        self._thread.start()

    def _stamp_events(self, name: str) -> None:
        """Turn on the event timestamps in `name` for this trace (kept to restore)."""
        try:
            with nsmod.entered(name):
                old = _sysctl(TIMESTAMP_SYSCTL)
                if old is not None and old != "1":
                    _sysctl(TIMESTAMP_SYSCTL, "1")
                    self._stamps_restore[name] = old
        except OSError:
            pass  # no nf_conntrack in this netns: its events stay stamped by read time

    def _unstamp_events(self) -> None:
        for name, old in self._stamps_restore.items():
            try:
                with nsmod.entered(name):
                    _sysctl(TIMESTAMP_SYSCTL, old)
            except OSError:
                pass  # the netns went away with its lab
        self._stamps_restore = {}

    def _read(self) -> None:
        # A timer, not select(): at thousands of connections/s a wakeup per message
        # costs more than the messages; the socket buffers hold POLL_S of events.
        yield_cpu()
        while not self._stop.wait(POLL_S):
            got = False
            for sock, name, ino in self._socks:
                got |= self._recv(sock, name, ino)
            if got:
                if self._notify is not None:
                    self._notify()
                else:
                    for ev in self.flush():
                        self._sink(ev)

    def _recv(self, sock: socket.socket, name: str, ino: int) -> bool:
        """Read every queued datagram (raw bytes only; decoded in flush())."""
        got = False
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                return got
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                # The socket overran and the kernel dropped an unknown number of
                # events. Counted as overruns (each is >= 1 lost event), never ignored.
                self._counters["overruns"] = self._counters.get("overruns", 0) + 1
                self._counters["lost"] += 1
                continue
            self._raw.append((data, name, ino, time.monotonic_ns()))  # bpf's clock
            got = True

    def flush(self) -> list[Event]:
        out, self._stash = self._stash, []
        raw = self._raw
        offset = realtime_offset()
        while raw:
            try:
                data, name, ino, now = raw.popleft()
            except IndexError:
                break
            for mtype, flags, start, end in messages(data):
                if mtype in (NLMSG_ERROR, NLMSG_OVERRUN):
                    self._counters["lost"] += 1
                    continue
                ev = decode(data, mtype, flags, start, end, name, ino, now, offset)
                if ev is None:
                    continue
                if not _matches(ev, self._scope):
                    self._counters["filtered"] += 1
                    continue
                self._counters["events"] += 1
                out.append(ev)
        return out

    def stop(self) -> dict[str, int]:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
            self._thread = None
        for sock, name, ino in self._socks:
            try:
                self._recv(sock, name, ino)
            finally:
                sock.close()
        self._socks = []
        self._unstamp_events()
        # Decode the rest now so the counters are final; a Tracer takes them with its
        # next flush() (right after stop), a plain sink gets them here.
        rest = self.flush()
        if self._notify is None:
            for ev in rest:
                self._sink(ev)
        else:
            self._stash.extend(rest)
        return dict(self._counters)
