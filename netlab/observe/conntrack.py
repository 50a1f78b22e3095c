"""Conntrack collector: ctnetlink NEW/UPDATE/DESTROY events from every scoped netns.

Why pyroute2 and not `conntrack -E`: pyroute2's NFCTSocket decodes event messages
(orig and reply tuples, status, mark, zone, TCP state) correctly on this kernel, and a
socket opened inside `netns.entered` keeps listening in that namespace without a
process per namespace. The reply tuple is the point: after REDIRECT/DNAT it names the
rewritten destination (app->VIP:80 shows a reply from pod:8080), which is how the
timeline joins a client's tuple to the one the server sees.

Conntrack only tracks in a netns whose netfilter rules need it (a nat table, a
conntrack/state match). A netns without such rules yields no events: that is the
kernel's lazy hook registration, not a collector fault.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Any

from netlab.kernel import netns as nsmod
from netlab.observe.collector import Capability, Collector, Scope, Sink
from netlab.observe.events import Event

# nfnetlink groups NEW=1, UPDATE=2, DESTROY=3 -> bitmask bits 0..2.
GROUPS = 0b111
NLM_F_CREATE = 0x400
MSG_DELETE = 2
# enum tcp_conntrack (uapi nf_conntrack_tcp.h)
CT_TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
                 "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")
# enum ip_conntrack_status bits (uapi nf_conntrack_common.h)
CT_STATUS = ("EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT", "DST_NAT",
             "SEQ_ADJUST", "SRC_NAT_DONE", "DST_NAT_DONE", "DYING", "FIXED_TIMEOUT",
             "TEMPLATE", "UNTRACKED", "HELPER", "OFFLOAD", "HW_OFFLOAD")
PROTOS = {6: "tcp", 17: "udp", 1: "icmp"}


def _tuple(nla: Any) -> dict[str, Any]:
    if nla is None:
        return {}
    ip, proto = nla.get_attr("CTA_TUPLE_IP"), nla.get_attr("CTA_TUPLE_PROTO")
    out: dict[str, Any] = {}
    if ip is not None:
        out["saddr"] = ip.get_attr("CTA_IP_V4_SRC") or ip.get_attr("CTA_IP_V6_SRC")
        out["daddr"] = ip.get_attr("CTA_IP_V4_DST") or ip.get_attr("CTA_IP_V6_DST")
    if proto is not None:
        num = proto.get_attr("CTA_PROTO_NUM")
        out["proto"] = PROTOS.get(num, str(num))
        out["sport"] = proto.get_attr("CTA_PROTO_SRC_PORT")
        out["dport"] = proto.get_attr("CTA_PROTO_DST_PORT")
    return out


def status_names(bits: int) -> list[str]:
    return [name for i, name in enumerate(CT_STATUS) if bits & (1 << i)]


def decode(msg: Any, netns_name: str, inode: int, ts_ns: int) -> Event | None:
    """One ctnetlink message -> Event (None for messages that are not conntrack events)."""
    mtype = msg["header"]["type"] & 0xFF
    if mtype == MSG_DELETE:
        kind = "ct_destroy"
    elif mtype == 0:
        kind = "ct_new" if msg["header"]["flags"] & NLM_F_CREATE else "ct_update"
    else:
        return None
    orig = _tuple(msg.get_attr("CTA_TUPLE_ORIG"))
    reply = _tuple(msg.get_attr("CTA_TUPLE_REPLY"))
    extra: dict[str, Any] = {"reply": reply, "zone": msg.get_attr("CTA_ZONE") or 0,
                             "id": msg.get_attr("CTA_ID")}
    status = msg.get_attr("CTA_STATUS")
    if status is not None:
        extra["status"] = status_names(status)
    info = msg.get_attr("CTA_PROTOINFO")
    tcp = info.get_attr("CTA_PROTOINFO_TCP") if info is not None else None
    if tcp is not None:
        st = tcp.get_attr("CTA_PROTOINFO_TCP_STATE")
        if st is not None:
            extra["state"] = CT_TCP_STATES[st] if st < len(CT_TCP_STATES) else str(st)
    return Event(ts_ns=ts_ns, source="conntrack", kind=kind, netns_inode=inode,
                 netns=netns_name, proto=orig.get("proto"), saddr=orig.get("saddr"),
                 sport=orig.get("sport"), daddr=orig.get("daddr"), dport=orig.get("dport"),
                 mark=msg.get_attr("CTA_MARK") or 0, extra=extra)


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


class ConntrackCollector(Collector):
    name = "conntrack"

    def __init__(self) -> None:
        self._socks: list[tuple[Any, str, int]] = []
        self._thread: threading.Thread | None = None
        self._running = False
        self._counters = {"events": 0, "lost": 0, "filtered": 0}

    def can_run(self) -> Capability:
        if os.geteuid() != 0:
            return Capability(False, "needs root (CAP_NET_ADMIN) to join conntrack groups")
        try:
            from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket  # noqa: F401
        except ImportError as e:
            return Capability(False, f"pyroute2 NFCTSocket unavailable: {e}")
        return Capability(True, "ctnetlink event groups NEW/UPDATE/DESTROY via pyroute2 "
                          "NFCTSocket, one socket per netns")

    def start(self, scope: Scope, sink: Sink) -> None:
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket

        self._scope, self._sink = scope, sink
        for name, ino in scope.netns.items():
            with nsmod.entered(name):
                sock = NFCTSocket()
            sock.bind(groups=GROUPS)
            self._socks.append((sock, name, ino))
        self._running = True
        self._thread = threading.Thread(target=self._read, name="netlab-conntrack",
                                        daemon=True)
        self._thread.start()

    def _read(self) -> None:
        by_fd = {s.fileno(): (s, n, i) for s, n, i in self._socks}
        while self._running:
            ready, _, _ = select.select(list(by_fd), [], [], 0.1)
            for fd in ready:
                self._drain(*by_fd[fd])

    def _drain(self, sock: Any, name: str, ino: int) -> None:
        try:
            msgs = sock.get()
        except OSError:
            # ENOBUFS: the socket overran and the kernel dropped an unknown number of
            # events. Counted as overruns (each is >= 1 lost event), never ignored.
            self._counters["overruns"] = self._counters.get("overruns", 0) + 1
            self._counters["lost"] += 1
            return
        now = time.monotonic_ns()  # same clock as bpf_ktime_get_ns()
        for msg in msgs:
            if msg["header"].get("error") is not None:
                self._counters["lost"] += 1
                continue
            ev = decode(msg, name, ino, now)
            if ev is None:
                continue
            if not _matches(ev, self._scope):
                self._counters["filtered"] += 1
                continue
            self._counters["events"] += 1
            self._sink(ev)

    def stop(self) -> dict[str, int]:
        self._running = False
        if self._thread:
            self._thread.join(timeout=2)
            self._thread = None
        for sock, name, ino in self._socks:
            while select.select([sock], [], [], 0)[0]:
                self._drain(sock, name, ino)
            sock.close()
        self._socks = []
        return dict(self._counters)
