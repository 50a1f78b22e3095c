"""Put conntrack and nftrace events where they happened among the packets. Pure.

Why: BPF events carry the kernel's clock at the hook. A netfilter trace message carries
no time at all, and xtables-monitor's line reaches us up to ~20 ms after the packet; a
conntrack message is read up to 50 ms late unless the kernel stamped it (Linux >= 6.14,
CTA_TIMESTAMP_EVENT, see conntrack.py). Sorted by read time, a REDIRECT lands after
the handshake it rewrote. So each such event is tied to the packet it belongs to, and
takes that packet's time:

- an nftrace event names its packet by netns, IPv4 identification, protocol, TCP flags
  and tuple (before or after NAT: one end is always unchanged). A hook with an input
  device (PREROUTING, INPUT, FORWARD) runs after the packet's `rx` on that device; a
  hook with only an output device (OUTPUT, POSTROUTING) runs before its `tx`. Events
  of one packet keep the order xtables-monitor printed them in.
- a packet BPF does not send (data and pure ACKs, by design) has no such anchor: its
  events stay in their netns' printed order, placed at their read time minus the
  delay measured on the anchored events of the same netns.
- a conntrack event without a kernel stamp is placed at the first packet of its
  connection in its netns: before that packet's `tx` (a locally sent packet is
  confirmed before it leaves) or after its `rx`.

Every moved event keeps its read time in `extra.read_ns` and says how it was placed in
`extra.ts_from`: `kernel`, `packet` (tied to a packet), `estimated` (read time minus
the netns' delay) or `read` (left where it was read).
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable

from netlab.observe.events import Event

PacketKey = tuple[int, int, str | None, str | None]  # netns inode, ip_id, proto, flags


def _ends(ev: Event) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    return (ev.saddr, ev.sport), (ev.daddr, ev.dport)


def _same_packet(nf: Event, pkt: Event) -> bool:
    """One end of the tuple unchanged (NAT rewrites only the other)."""
    a, b = _ends(nf)
    c, d = _ends(pkt)
    return a == c or b == d


def _packets(events: list[Event]) -> dict[PacketKey, list[Event]]:
    idx: dict[PacketKey, list[Event]] = {}
    for ev in events:
        if ev.source == "bpf" and ev.kind in ("rx", "tx") and "ip_id" in ev.extra:
            idx.setdefault((ev.netns_inode, ev.extra["ip_id"], ev.proto, ev.tcp_flags),
                           []).append(ev)
    for group in idx.values():
        group.sort(key=lambda e: e.ts_ns)
    return idx


def _anchor(nf: Event, idx: dict[PacketKey, list[Event]]) -> tuple[Event, bool] | None:
    """(the BPF packet event `nf` belongs to, True if the hook runs after it)."""
    ip_id = nf.extra.get("ip_id")
    if ip_id is None:
        return None
    cands = idx.get((nf.netns_inode, ip_id, nf.proto, nf.tcp_flags), [])
    read = nf.extra.get("read_ns", nf.ts_ns)
    inbound = bool(nf.extra.get("in"))
    want = "rx" if inbound else "tx"
    best = None
    for pkt in cands:
        if pkt.kind != want or pkt.ts_ns > read or not _same_packet(nf, pkt):
            continue
        if inbound and pkt.ifname and pkt.ifname != nf.extra.get("in"):
            continue
        best = pkt  # the latest such packet before the line was read
    return (best, inbound) if best is not None else None


def _place_nftrace(events: list[Event], idx: dict[PacketKey, list[Event]]) -> None:
    by_ns: dict[int, list[Event]] = {}
    for ev in events:
        if ev.source == "nftrace" and ev.extra.get("ts_from", "read") == "read":
            by_ns.setdefault(ev.netns_inode, []).append(ev)
    for evs in by_ns.values():  # in printed (= kernel) order per netns
        anchors: list[tuple[Event, bool] | None] = [_anchor(e, idx) for e in evs]
        # Events of one packet at one anchor: before a tx, after an rx, in printed order.
        at: dict[int, list[int]] = {}
        for i, a in enumerate(anchors):
            if a is not None:
                at.setdefault(id(a[0]), []).append(i)
        delays: list[int] = []
        for members in at.values():
            pkt, after = anchors[members[0]]  # type: ignore[misc]
            n = len(members)
            for k, i in enumerate(members):
                ev = evs[i]
                read = ev.extra.get("read_ns", ev.ts_ns)
                ev.extra["read_ns"] = read
                ev.ts_ns = pkt.ts_ns + 1 + k if after else pkt.ts_ns - (n - k)
                ev.extra["ts_from"] = "packet"
                delays.append(read - ev.ts_ns)
        if not delays:
            continue
        delay = int(statistics.median(delays))
        prev = None
        for i, ev in enumerate(evs):
            if anchors[i] is not None:
                prev = ev.ts_ns
                continue
            read = ev.extra.get("read_ns", ev.ts_ns)
            est = read - delay
            nxt = next((evs[j].ts_ns for j in range(i + 1, len(evs)) if anchors[j] is not None),
                       None)
            if prev is not None:
                est = max(est, prev + 1)
            if nxt is not None:
                est = min(est, nxt - 1)
            ev.extra["read_ns"] = read
            ev.ts_ns = est
            ev.extra["ts_from"] = "estimated"
            prev = est


def _tuple(ev: Event) -> tuple[Any, ...]:
    return (ev.proto, ev.saddr, ev.sport, ev.daddr, ev.dport)


def _place_conntrack(events: list[Event]) -> None:
    firsts: dict[tuple[int, tuple[Any, ...]], Event] = {}
    for ev in sorted((e for e in events if e.source == "bpf" and e.kind in ("rx", "tx")),
                     key=lambda e: e.ts_ns):
        firsts.setdefault((ev.netns_inode, _tuple(ev)), ev)
    for ev in events:
        if ev.source != "conntrack" or ev.kind != "ct_new" or ev.extra.get("ts_from") != "read":
            continue
        r = ev.extra.get("reply") or {}
        nat_fwd = (r.get("proto"), r.get("daddr"), r.get("dport"), r.get("saddr"), r.get("sport"))
        cands = [firsts.get((ev.netns_inode, t)) for t in (_tuple(ev), nat_fwd)]
        pkts = [p for p in cands if p is not None and p.ts_ns <= ev.ts_ns]
        if not pkts:
            continue
        pkt = min(pkts, key=lambda p: p.ts_ns)
        ev.extra["read_ns"] = ev.ts_ns
        ev.ts_ns = pkt.ts_ns - 1 if pkt.kind == "tx" else pkt.ts_ns + 1
        ev.extra["ts_from"] = "packet"


def place(events: Iterable[Event]) -> list[Event]:
    """The events, time-ordered, with conntrack and nftrace events moved to their
    packets (in place: the same Event objects). Idempotent."""
    evs = list(events)
    _place_nftrace(evs, _packets(evs))
    _place_conntrack(evs)
    return sorted(evs, key=lambda e: e.ts_ns)
