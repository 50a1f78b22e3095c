"""Join events into per-connection timelines, across NAT. Pure: no kernel, no root.

Why a union-find over tuples: one connection wears several tuples. The client's SYN
to VIP:80 becomes pod:8080 after DNAT, or 127.0.0.1:15001 after REDIRECT; conntrack
reports both (orig and reply), and that pair is the only trustworthy link. So each
conntrack event merges the key of its orig tuple with the key of its reversed reply
tuple, and every other event joins whichever group its own tuple's key is in.

Keys ignore direction (a SYN and its SYN-ACK share a key) and the netns, since a flow
crosses namespaces with its tuple intact, except when a loopback address is in the
tuple: 127.0.0.1:15001 in one pod is not the same socket as in another, so then the
netns inode is part of the key.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from netlab.observe.events import Event

Key = tuple[Any, ...]


def _loopback(addr: str | None) -> bool:
    try:
        return addr is not None and ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def flow_key(proto: str | None, saddr: str | None, sport: int | None, daddr: str | None,
             dport: int | None, netns_inode: int) -> Key | None:
    if not saddr or not daddr or not proto:
        return None
    if proto in ("tcp", "udp") and (not sport or not dport):
        return None  # e.g. SYN_SENT before the source port is bound
    ends = tuple(sorted([(saddr, sport or 0), (daddr, dport or 0)]))
    scope = netns_inode if _loopback(saddr) or _loopback(daddr) else 0
    return (proto, ends, scope)


def event_key(ev: Event) -> Key | None:
    return flow_key(ev.proto, ev.saddr, ev.sport, ev.daddr, ev.dport, ev.netns_inode)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Key, Key] = {}

    def find(self, k: Key) -> Key:
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: Key, b: Key) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _tuple_dict(ev: Event) -> dict[str, Any]:
    return {"proto": ev.proto, "saddr": ev.saddr, "sport": ev.sport, "daddr": ev.daddr,
            "dport": ev.dport}


@dataclass
class Hop:
    ts_ns: int
    netns: str | None
    ifname: str | None
    kind: str
    source: str
    saddr: str | None = None
    sport: int | None = None
    daddr: str | None = None
    dport: int | None = None
    tcp_flags: str | None = None
    seq: int | None = None
    ack: int | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    mark: int | None = None  # skb->mark (bpf), ct mark (conntrack)

    def text_bits(self, detail_keys: Iterable[str]) -> list[str]:
        """What a text view prints after where and what: the addresses, the TCP flags,
        the drop reason, then the `detail_keys` this hop has, as key=value."""
        bits = []
        if self.saddr:
            bits.append(f"{self.saddr}:{self.sport}>{self.daddr}:{self.dport}")
        if self.tcp_flags:
            bits.append(f"[{self.tcp_flags}]")
        if self.reason:
            bits.append(f"reason={self.reason}")
        bits += [f"{k}={self.detail[k]}" for k in detail_keys if k in self.detail]
        return bits


_DETAIL_KEYS = ("location", "verdict", "rule", "table", "chain", "oldstate", "newstate",
                "state", "status", "reply", "dev_from", "sk_state", "ts_from", "ip_id", "in",
                "out")


def _hop(ev: Event) -> Hop:
    return Hop(ts_ns=ev.ts_ns, netns=ev.netns or str(ev.netns_inode), ifname=ev.ifname,
               kind=ev.kind, source=ev.source, saddr=ev.saddr, sport=ev.sport,
               daddr=ev.daddr, dport=ev.dport, tcp_flags=ev.tcp_flags, seq=ev.seq,
               ack=ev.ack, reason=ev.reason, mark=ev.mark,
               detail={k: ev.extra[k] for k in _DETAIL_KEYS if k in ev.extra})


@dataclass
class Timeline:
    flow_id: str
    proto: str | None
    client: dict[str, Any]  # the tuple as the initiator sent it (pre-NAT)
    tuples: list[dict[str, Any]]  # every forward tuple the flow wore, first seen first
    conntrack: list[dict[str, Any]]  # {netns, kind, orig, reply, status, state}
    hops: list[Hop]
    first_drop: dict[str, Any] | None
    retransmissions: list[dict[str, Any]]
    resets: list[dict[str, Any]]  # one per RST segment, with the hops it was seen at
    nf_verdicts: list[dict[str, Any]]
    drops: list[dict[str, Any]] = field(default_factory=list)  # on the path, in order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def count(self, kind: str, netns: str | None = None, flags: str | None = None) -> int:
        return sum(1 for h in self.hops if h.kind == kind
                   and (netns is None or h.netns == netns)
                   and (flags is None or h.tcp_flags == flags))


def _client_tuple(evs: list[Event]) -> dict[str, Any]:
    for ev in evs:
        if ev.kind == "ct_new":
            return _tuple_dict(ev)
    for ev in evs:
        if ev.tcp_flags == "S" and ev.source == "bpf":
            return _tuple_dict(ev)
    return _tuple_dict(evs[0])


def _forward_tuples(evs: list[Event], client: dict[str, Any]) -> list[dict[str, Any]]:
    """Tuples in the initiator's direction: the client's plus NAT rewrites of it."""
    seen: list[dict[str, Any]] = [client]
    for ev in evs:
        if ev.source == "conntrack" and ev.extra.get("reply"):
            r = ev.extra["reply"]
            fwd = {"proto": r.get("proto"), "saddr": r.get("daddr"), "sport": r.get("dport"),
                   "daddr": r.get("saddr"), "dport": r.get("sport")}
            for t in (_tuple_dict(ev), fwd):
                if t not in seen:
                    seen.append(t)
    return seen


def _retransmissions(evs: list[Event]) -> list[dict[str, Any]]:
    """SYN/FIN segments seen again with the same seq at the same point (netns and
    device: a bridge sends one segment on br0 and then on a port), plus the
    kernel's own SYN-ACK retransmit events. A segment counts when it is sent again
    (tx) or dropped again (drop): tcp:tcp_retransmit_synack fires only when the
    retransmitted SYN-ACK was sent successfully, so a SYN-ACK that the server's OUTPUT
    chain drops is retransmitted silently and only its repeated drops show it.
    Pure ACKs legitimately repeat a seq, so they are not counted."""
    out: list[dict[str, Any]] = []
    seen: dict[tuple[Any, ...], int] = {}
    for ev in evs:
        if ev.kind == "retransmit_synack":
            out.append({"ts_ns": ev.ts_ns, "netns": ev.netns, "kind": ev.kind,
                        "tuple": _tuple_dict(ev)})
        elif (ev.kind in ("tx", "drop") and ev.source == "bpf" and ev.tcp_flags
              and ev.seq is not None and ("S" in ev.tcp_flags or "F" in ev.tcp_flags)):
            k = (ev.kind, ev.netns_inode, ev.ifname, ev.tuple(), ev.seq, ev.tcp_flags)
            seen[k] = seen.get(k, 0) + 1
            if seen[k] > 1:
                out.append({"ts_ns": ev.ts_ns, "netns": ev.netns, "kind": "retransmit",
                            "seen_as": ev.kind, "ifname": ev.ifname,
                            "tcp_flags": ev.tcp_flags, "seq": ev.seq, "attempt": seen[k],
                            "tuple": _tuple_dict(ev)})
    return out


def _not_on_path(drop: Event, evs: list[Event]) -> str | None:
    """Why a drop is not a loss on the traced path, or None when it is one.

    A bridge whose device is promiscuous (a capture made it so) hands a copy of every
    frame it forwards to its own IP stack, which frees it as PACKET_OTHERHOST: the frame
    was never meant for that device. Only then does a frame addressed to another host
    reach a bridge's own stack (br_handle_frame_finish delivers locally what is for the
    bridge's address, broadcast, or everything when promiscuous), so an OTHERHOST drop on
    a bridge device (`dev_kind: bridge`) is such a copy. Elsewhere a copy is told from a
    real loss by the packet itself: the same segment (tuple, flags, seq, IP id) seen
    again later, received in another netns or sent on another device.
    """
    if drop.reason != "OTHERHOST":
        return None
    if drop.extra.get("dev_kind") == "bridge":
        return (f"a copy for bridge {drop.ifname}'s own stack (PACKET_OTHERHOST: the bridge "
                "is promiscuous); the bridge forwarded the frame itself")
    same = (drop.tuple(), drop.tcp_flags, drop.seq, drop.extra.get("ip_id"))
    for ev in evs:
        if ev.ts_ns < drop.ts_ns or ev.source != "bpf" or ev.kind not in ("rx", "tx"):
            continue
        if (ev.tuple(), ev.tcp_flags, ev.seq, ev.extra.get("ip_id")) != same:
            continue
        if ev.netns_inode != drop.netns_inode or ev.ifname != drop.ifname:
            return (f"a copy for {drop.ifname}'s own stack (PACKET_OTHERHOST: the device is "
                    f"promiscuous); the packet went on to {ev.netns}/{ev.ifname}")
    return None


def _drop_dict(d: Event) -> dict[str, Any]:
    return {"ts_ns": d.ts_ns, "netns": d.netns, "ifname": d.ifname, "reason": d.reason,
            "tcp_flags": d.tcp_flags, "location": d.extra.get("location"),
            "tuple": _tuple_dict(d)}


SEND_RESET_SLACK_NS = 5_000_000  # tcp_send_reset fires around its segment's tx, either side


def _resets(evs: list[Event]) -> list[dict[str, Any]]:
    """One entry per RST segment, with every place it was seen (`hops`).

    A reset crosses several interfaces and each one fires the packet hooks, so per-event
    counting says "10 resets" for one RST. Hops of one segment share its sequence number
    (NAT rewrites addresses, not seq); the socket events (`send_reset` has no seq) join
    the segment sent to the same peer from their netns nearest in time (an active reset
    fires the tracepoint after its tx), `recv_reset` the one last received there.
    """
    rsts: list[dict[str, Any]] = []
    by_seq: dict[tuple[Any, ...], dict[str, Any]] = {}
    sends = [e for e in evs if e.kind == "send_reset"]
    recvs = [e for e in evs if e.kind == "recv_reset"]
    for e in evs:
        if e.kind not in ("tx", "rx", "drop") or not e.tcp_flags or "R" not in e.tcp_flags:
            continue
        key = (e.seq, e.tcp_flags)
        r = by_seq.get(key)
        if r is None:
            r = by_seq[key] = {"ts_ns": e.ts_ns, "netns": e.netns, "tuple": _tuple_dict(e),
                               "seq": e.seq, "tcp_flags": e.tcp_flags, "sent_by": None,
                               "received_by": None, "hops": []}
            rsts.append(r)
        r["hops"].append({"ts_ns": e.ts_ns, "netns": e.netns, "ifname": e.ifname,
                          "kind": e.kind, "tuple": _tuple_dict(e)})
    for s in sends:  # the segment this socket event made: a tx in its netns, to the same peer
        def gap(r: dict[str, Any], s: Event = s) -> int | None:
            d = [abs(h["ts_ns"] - s.ts_ns) for h in r["hops"] if h["kind"] == "tx"
                 and h["netns"] == s.netns and (h["tuple"]["daddr"], h["tuple"]["dport"])
                 == (s.daddr, s.dport)]
            return min(d) if d else None
        near = [(g, r) for r in rsts if r["sent_by"] is None
                for g in [gap(r)] if g is not None and g <= SEND_RESET_SLACK_NS]
        r = min(near, key=lambda x: x[0])[1] if near else None
        hop = {"ts_ns": s.ts_ns, "netns": s.netns, "ifname": None, "kind": s.kind,
               "tuple": _tuple_dict(s), "sk_state": s.extra.get("sk_state")}
        if r is None:  # its packet was not seen (e.g. out of scope): still one reset
            r = {"ts_ns": s.ts_ns, "netns": s.netns, "tuple": _tuple_dict(s), "seq": None,
                 "tcp_flags": "R", "sent_by": None, "received_by": None, "hops": []}
            rsts.append(r)
        r["sent_by"] = s.netns
        r["netns"] = s.netns
        r["hops"].append(hop)
        r["ts_ns"] = min(r["ts_ns"], s.ts_ns)
    for v in recvs:  # the segment last received in its netns
        r = max((r for r in rsts if any(h["kind"] == "rx" and h["netns"] == v.netns
                                        and h["ts_ns"] <= v.ts_ns for h in r["hops"])),
                key=lambda r: r["ts_ns"], default=None)
        hop = {"ts_ns": v.ts_ns, "netns": v.netns, "ifname": None, "kind": v.kind,
               "tuple": _tuple_dict(v)}
        if r is None:
            r = {"ts_ns": v.ts_ns, "netns": v.netns, "tuple": _tuple_dict(v), "seq": None,
                 "tcp_flags": "R", "sent_by": None, "received_by": None, "hops": []}
            rsts.append(r)
        r["received_by"] = v.netns
        r["hops"].append(hop)
    for r in rsts:
        r["hops"].sort(key=lambda h: h["ts_ns"])
    return sorted(rsts, key=lambda r: r["ts_ns"])


def _timeline(n: int, evs: list[Event]) -> Timeline:
    evs.sort(key=lambda e: e.ts_ns)
    client = _client_tuple(evs)
    hops = [_hop(e) for e in evs]
    drops = []
    for ev, hop in zip(evs, hops):
        if ev.kind != "drop":
            continue
        why = _not_on_path(ev, evs)
        if why:
            hop.detail["not_on_path"] = why
        else:
            drops.append(ev)
    first_drop = _drop_dict(drops[0]) if drops else None
    ct = [{"ts_ns": e.ts_ns, "netns": e.netns, "kind": e.kind, "orig": _tuple_dict(e),
           "reply": e.extra.get("reply"), "status": e.extra.get("status"),
           "state": e.extra.get("state"), "mark": e.mark, "zone": e.extra.get("zone")}
          for e in evs if e.source == "conntrack"]
    nf = [{"ts_ns": e.ts_ns, "netns": e.netns, "table": e.extra.get("table"),
           "chain": e.extra.get("chain"), "rule": e.extra.get("rule"),
           "verdict": e.extra.get("verdict"), "ifname": e.ifname, "tcp_flags": e.tcp_flags}
          for e in evs if e.source == "nftrace"]
    c = client
    flow_id = f"{n}:{c.get('proto')}:{c.get('saddr')}:{c.get('sport')}->" \
              f"{c.get('daddr')}:{c.get('dport')}"
    return Timeline(flow_id=flow_id, proto=c.get("proto"), client=client,
                    tuples=_forward_tuples(evs, client), conntrack=ct,
                    hops=hops, first_drop=first_drop,
                    retransmissions=_retransmissions(evs), resets=_resets(evs), nf_verdicts=nf,
                    drops=[_drop_dict(d) for d in drops])


def build_timelines(events: Iterable[Event]) -> list[Timeline]:
    """Group events into flows (NAT-aware) and order each flow by time."""
    evs = list(events)
    uf = _UnionFind()
    for ev in evs:
        k = event_key(ev)
        if k is None:
            continue
        uf.find(k)
        reply = ev.extra.get("reply") if ev.source == "conntrack" else None
        if reply:
            rk = flow_key(reply.get("proto"), reply.get("saddr"), reply.get("sport"),
                          reply.get("daddr"), reply.get("dport"), ev.netns_inode)
            if rk is not None:
                uf.union(k, rk)
    groups: dict[Key, list[Event]] = {}
    for ev in evs:
        k = event_key(ev)
        if k is not None:
            groups.setdefault(uf.find(k), []).append(ev)
    ordered = sorted(groups.values(), key=lambda g: min(e.ts_ns for e in g))
    return [_timeline(i, g) for i, g in enumerate(ordered, 1)]


def find(timelines: list[Timeline], **tuple_fields: Any) -> list[Timeline]:
    """Timelines that wore a tuple matching all given fields (e.g. dport=8080)."""
    return [t for t in timelines
            if any(all(tp.get(k) == v for k, v in tuple_fields.items()) for tp in t.tuples)]


def _ep(t: dict[str, Any] | None) -> str:
    if not t:
        return "?"
    return f"{t.get('saddr')}:{t.get('sport')} -> {t.get('daddr')}:{t.get('dport')}"


def render_text(tl: Timeline) -> str:
    """A readable view: one line per hop, times relative to the first event."""
    lines = [f"flow {tl.flow_id}  client {_ep(tl.client)}"]
    for t in tl.tuples[1:]:
        lines.append(f"  also seen as {_ep(t)}")
    t0 = tl.hops[0].ts_ns if tl.hops else 0
    for h in tl.hops:
        where = f"{h.netns}/{h.ifname}" if h.ifname else f"{h.netns}"
        bits = [f"{(h.ts_ns - t0) / 1e6:9.3f}ms", f"{where:<28}", f"{h.source}:{h.kind:<18}",
                *h.text_bits(("location", "chain", "verdict", "rule", "newstate", "state"))]
        lines.append("  " + " ".join(str(b) for b in bits))
    if tl.first_drop:
        d = tl.first_drop
        lines.append(f"  FIRST DROP in {d['netns']}/{d['ifname']}: {d['reason']}"
                     f" ({d.get('location')})")
    if tl.retransmissions:
        lines.append(f"  retransmissions: {len(tl.retransmissions)}")
    if tl.resets:
        lines.append(f"  resets: {len(tl.resets)}")
    for c in tl.conntrack:
        if c["kind"] == "ct_new":
            lines.append(f"  conntrack[{c['netns']}] orig {_ep(c['orig'])}"
                         f" reply {_ep(c['reply'])}")
    return "\n".join(lines)
