"""One story per user connection: the flows that carried it, joined, with the proxies' say.

Why: in a mesh one `curl` is four TCP/UDP flows (the DNS lookup, the app's connection
redirected to its proxy, the HBONE connection between nodes, the destination proxy's
connection to the app), each a separate Timeline with its own tuples. Listed apart,
nothing says which carried which. A story names them as legs of one connection and
puts them on one clock, with the proxies' decisions (netlab.observe.proxylog) as events.

The joins, all on evidence the kernel or a proxy wrote:
- a leg's own tuples come from its Timeline (5-tuples, joined across NAT by conntrack);
- a proxy's access log names the downstream peer it served (`src.addr`, Envoy's
  downstream remote address): the app leg whose client tuple is that address is the
  connection the log line is about;
- the next leg is named by the log line too: Envoy's upstream local address is the
  client end of its upstream connection; ztunnel's outbound line gives the HBONE
  destination and CONNECT authority, and the destination ztunnel's inbound line gives
  the HBONE connection's client address (`src.addr`) exactly; the destination proxy's
  connection to the app is the flow that leaves for the CONNECT authority from the
  client's IP (ztunnel keeps it) after the HBONE stream opened;
- a passthrough (ztunnel sends plain TCP) is the flow from the pod to the line's
  `dst.addr` after the app's connection opened;
- the DNS lookups are the pod's port-53 flows since its previous user connection.
A flow that no log line names is still shown, as a leg of its own story or among the
other flows; nothing is guessed from port numbers alone except the leg names.

Pure: input is the Timelines, the proxy events and the lab's summary (status --json).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable

from netlab import mesh
from netlab.observe.events import Event
from netlab.observe.timeline import Timeline

DNS_PORT = 53


def _addr(ip: Any, port: Any) -> str:
    return f"{ip}:{port}"


def _is_loopback(ip: str | None) -> bool:
    try:
        return ip is not None and ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


@dataclass
class LabView:
    """Names for addresses and namespaces, from the lab's summary."""

    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # ip -> pod summary
    nodes: dict[str, str] = field(default_factory=dict)  # netns -> node name
    services: dict[str, str] = field(default_factory=dict)  # cluster IP -> ns/name
    netns_label: dict[str, str] = field(default_factory=dict)  # netns -> short label
    dns: str | None = None

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> "LabView":
        v = cls(dns=summary.get("dns"))
        for n in summary.get("nodes", []):
            v.nodes[n["netns"]] = n["name"]
            v.netns_label[n["netns"]] = n["name"]
        for p in summary.get("pods", []):
            v.pods[p["ip"]] = p
            v.netns_label[p["netns"]] = f"{p['namespace']}/{p['name']}"
        for s in summary.get("services", []):
            if s.get("clusterIP"):
                v.services[s["clusterIP"]] = f"{s['namespace']}/{s['name']}"
        lab = summary.get("lab")
        if lab:
            v.netns_label.setdefault(f"nl-{lab}-fabric", "fabric")
        return v

    def pod(self, ip: str | None) -> dict[str, Any] | None:
        return self.pods.get(ip or "")

    def who(self, ip: str | None) -> str:
        p = self.pod(ip)
        if p:
            return f"{p['namespace']}/{p['name']}"
        if ip and ip in self.services:
            return f"svc {self.services[ip]}"
        return ip or "?"

    def node_of(self, ip: str | None) -> str | None:
        p = self.pod(ip)
        return p.get("node") if p else None

    def label(self, netns: str | None) -> str:
        return self.netns_label.get(netns or "", netns or "?")


@dataclass
class Leg:
    name: str
    timeline: Timeline
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "flow_id": self.timeline.flow_id,
                "client": self.timeline.client, "tuples": self.timeline.tuples,
                "note": self.note}


@dataclass
class Story:
    id: int
    title: str
    pod: str | None
    client: dict[str, Any]
    legs: list[Leg]
    decisions: list[Event]
    notes: list[str] = field(default_factory=list)

    @property
    def start_ns(self) -> int:
        times = [h.ts_ns for leg in self.legs for h in leg.timeline.hops[:1]]
        times += [d.ts_ns for d in self.decisions]
        return min(times) if times else 0

    @property
    def denied(self) -> list[Event]:
        return [d for d in self.decisions if d.extra.get("denied")]

    @property
    def drops(self) -> list[tuple[Leg, dict[str, Any]]]:
        return sorted(((leg, d) for leg in self.legs for d in leg.timeline.drops),
                      key=lambda x: x[1]["ts_ns"])

    @property
    def resets(self) -> list[tuple[Leg, dict[str, Any]]]:
        return sorted(((leg, r) for leg in self.legs for r in leg.timeline.resets),
                      key=lambda x: x[1]["ts_ns"])

    def outcome(self) -> str:
        """In words: denied (by whom), dropped (where), reset, or completed."""
        if self.denied:
            d = self.denied[0]
            return f"{d.extra['proxy']}: {d.extra['decision']}"
        failed = [d for d in self.decisions if d.extra.get("failed")]
        if self.drops:
            leg, d = self.drops[0]
            return f"dropped in {leg.name}: {d['reason']} in {d['netns']}/{d['ifname']}"
        if failed:
            return f"failed at {failed[0].extra['proxy']}: {failed[0].extra['decision']}"
        if self.resets:
            return f"reset ({len(self.resets)} RST)"
        return "completed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "pod": self.pod, "client": self.client,
            "start_ns": self.start_ns, "outcome": self.outcome(),
            "legs": [leg.to_dict() for leg in self.legs],
            "decisions": [{"ts_ns": d.ts_ns, "proxy": d.extra.get("proxy"),
                           "decision": d.extra.get("decision"),
                           "denied": d.extra.get("denied", False),
                           "failed": d.extra.get("failed", False),
                           "policy": d.extra.get("policy"), "log": d.extra.get("log")}
                          for d in self.decisions],
            "drops": [dict(d, leg=leg.name) for leg, d in self.drops],
            "resets": [dict(r, leg=leg.name) for leg, r in self.resets],
            "notes": self.notes,
        }


# -- reading a flow -------------------------------------------------------------------------

def _start(tl: Timeline) -> int:
    return tl.hops[0].ts_ns if tl.hops else 0


def _client_addr(tl: Timeline) -> str:
    return _addr(tl.client.get("saddr"), tl.client.get("sport"))


def _captured_at(tl: Timeline) -> tuple[str, int] | None:
    """(netns, port) of a proxy listener a NAT rule sent this flow to, if any: conntrack's
    reply comes from the loopback or the pod's own address at a proxy port."""
    for c in tl.conntrack:
        r = c.get("reply") or {}
        o = c.get("orig") or {}
        if (r.get("sport") in mesh.PROXY_PORTS and r.get("sport") != o.get("dport")
                and c.get("kind") == "ct_new"):
            return c.get("netns"), r["sport"]
    return None


def _proxy_marked(tl: Timeline) -> bool:
    """Its opening SYN carries the mark only proxies set (mesh.PROXY_MARK)."""
    for h in tl.hops:
        if h.source == "bpf" and h.kind == "tx" and h.tcp_flags == "S" and h.mark is not None:
            return h.mark & mesh.PROXY_MARK_MASK == mesh.PROXY_MARK
    return False


def _is_dns(tl: Timeline) -> bool:
    return tl.client.get("dport") == DNS_PORT


def _is_hbone(tl: Timeline) -> bool:
    return tl.client.get("dport") == mesh.HBONE_PORT


class _Joiner:
    def __init__(self, timelines: list[Timeline], proxy_events: list[Event], lab: LabView) -> None:
        self.tls = sorted(timelines, key=_start)
        self.records = sorted(proxy_events, key=lambda e: e.ts_ns)
        self.lab = lab
        self.used_flows: set[str] = set()
        self.used_records: set[int] = set()
        self.by_client: dict[str, list[Timeline]] = {}
        for tl in self.tls:
            self.by_client.setdefault(_client_addr(tl), []).append(tl)

    # -- records
    def _take(self, rec: Event) -> Event:
        self.used_records.add(id(rec))
        return rec

    def records_from(self, src: str, **want: Any) -> list[Event]:
        """Unused log records whose downstream peer is `src` (and matching `want`)."""
        out = []
        for r in self.records:
            if id(r) in self.used_records or _addr(r.saddr, r.sport) != src:
                continue
            if all(r.extra.get(k) == v for k, v in want.items()):
                out.append(r)
        return out

    # -- flows
    def flow_from(self, client: str, dst: str | None = None) -> Timeline | None:
        for tl in self.by_client.get(client, []):
            if tl.flow_id in self.used_flows:
                continue
            if dst is None or any(_addr(t.get("daddr"), t.get("dport")) == dst
                                  for t in tl.tuples):
                return tl
        return None

    def flow_to(self, src_ip: str | None, dst: str, after: int,
                netns: str | None = None) -> Timeline | None:
        """The first unused flow from `src_ip` to `dst` opened after `after`."""
        for tl in self.tls:
            if tl.flow_id in self.used_flows or _start(tl) < after:
                continue
            if tl.client.get("saddr") != src_ip:
                continue
            if not any(_addr(t.get("daddr"), t.get("dport")) == dst for t in tl.tuples):
                continue
            if netns and not any(h.netns == netns for h in tl.hops):
                continue
            return tl
        return None

    def leg(self, name: str, tl: Timeline, note: str | None = None) -> Leg:
        self.used_flows.add(tl.flow_id)
        return Leg(name, tl, note)

    # -- naming
    def proxy_name(self, netns: str | None, port: int) -> str:
        """Who listens at `port` in `netns`: the pod's sidecar, else its node's ztunnel."""
        pod = next((p for p in self.lab.pods.values() if p.get("netns") == netns), None)
        kind = "sidecar" if (pod or {}).get("mode") == "sidecar" else "ztunnel"
        return f"{kind} :{port}"

    def envoy_leg_name(self, rec: Event, nxt: Timeline) -> str:
        """`sidecar → sidecar :15006 (ns/pod)`, `sidecar → app`, `waypoint → ns/pod`."""
        kind = str(rec.extra.get("proxy", "envoy")).split("/")[0]
        cap = _captured_at(nxt)
        if cap is not None:
            return f"{kind} → {self.proxy_name(cap[0], cap[1])} ({self.lab.label(cap[0])})"
        dst = self.lab.pod(nxt.client.get("daddr"))
        if dst is not None and dst.get("netns") == rec.netns:
            return f"{kind} → app"
        return f"{kind} → {self.lab.who(nxt.client.get('daddr'))}"

    def hbone_name(self, tl: Timeline) -> str:
        a = self.lab.node_of(tl.client.get("saddr")) or tl.client.get("saddr")
        b = self.lab.node_of(tl.client.get("daddr")) or tl.client.get("daddr")
        return f"HBONE {a} → {b} :{mesh.HBONE_PORT}"

    # -- the chain after a leg
    def follow(self, tl: Timeline, legs: list[Leg], decisions: list[Event],
               notes: list[str], depth: int = 0) -> None:
        """Legs and decisions reached from `tl` through the proxies' log lines."""
        if depth > 6:
            return
        for rec in self.records_from(_client_addr(tl)):
            decisions.append(self._take(rec))
            fmt, direction = rec.extra.get("format"), rec.extra.get("direction")
            if fmt == "envoy":
                up = rec.extra.get("upstream_local")
                nxt = self.flow_from(up) if up else None
                if nxt is not None:
                    legs.append(self.leg(self.envoy_leg_name(rec, nxt), nxt))
                    self.follow(nxt, legs, decisions, notes, depth + 1)
            elif direction == "outbound" and rec.extra.get("hbone"):
                self._hbone(tl, rec, legs, decisions, notes, depth)
            elif direction == "outbound":
                dst = _addr(rec.daddr, rec.dport)
                nxt = self.flow_to(tl.client.get("saddr"), dst, _start(tl))
                if nxt is not None:
                    legs.append(self.leg(f"ztunnel → {self.lab.who(rec.daddr)} (passthrough)", nxt))
                    self.follow(nxt, legs, decisions, notes, depth + 1)
            elif direction == "inbound" and not rec.extra.get("denied") and not rec.extra.get("failed"):
                pod = self.lab.pod(rec.daddr)
                nxt = self.flow_to(tl.client.get("saddr"), _addr(rec.daddr, rec.dport),
                                   _start(tl) + 1, pod.get("netns") if pod else None)
                if nxt is not None:
                    legs.append(self.leg("ztunnel → app", nxt))

    def _hbone(self, app: Timeline, out: Event, legs: list[Leg], decisions: list[Event],
               notes: list[str], depth: int) -> None:
        authority, dst = out.extra["hbone"], _addr(out.daddr, out.dport)
        src_ip = app.client.get("saddr")
        # The destination's line for the same stream: same authority, from our pod's IP.
        ins = [r for r in self.records if id(r) not in self.used_records
               and r.extra.get("direction") == "inbound" and r.extra.get("hbone") == authority
               and r.saddr == src_ip and _addr(r.daddr, r.dport) == dst]
        inbound = min(ins, key=lambda r: abs(r.ts_ns - out.ts_ns)) if ins else None
        hb = None
        if inbound is not None:
            hb = next((tl for tl in self.by_client.get(_addr(inbound.saddr, inbound.sport), [])
                       if _is_hbone(tl)), None)
        if hb is None:  # no destination line: a new HBONE connection opened for this one
            hb = self.flow_to(src_ip, dst, _start(app))
        if hb is not None:
            reused = hb.flow_id in self.used_flows or _start(hb) < _start(app)
            name = self.hbone_name(hb)
            legs.append(Leg(name, hb, "pooled: opened earlier and shared with other connections"
                            if reused else None))
            self.used_flows.add(hb.flow_id)
        else:
            a = self.lab.node_of(src_ip) or src_ip
            b = self.lab.node_of(out.daddr) or out.daddr
            notes.append(f"HBONE {a} → {b} :{mesh.HBONE_PORT}: a pooled connection opened "
                         f"before the trace (no packets of it were seen)")
        if inbound is None:
            return
        decisions.append(self._take(inbound))
        if inbound.extra.get("denied") or inbound.extra.get("failed"):
            return
        pod = self.lab.pod(inbound.daddr)
        nxt = self.flow_to(src_ip, authority, _start(app) + 1, pod.get("netns") if pod else None)
        if nxt is not None:
            legs.append(self.leg("ztunnel → app", nxt))


def _root(tl: Timeline, lab: LabView) -> bool:
    """A connection a user's app opened: from a pod's address, not DNS, not HBONE, not a
    proxy's own (a node's ztunnel fetching certificates is not a user connection)."""
    if _is_dns(tl) or _is_hbone(tl) or _proxy_marked(tl) or not lab.pod(tl.client.get("saddr")):
        return False
    if _is_loopback(tl.client.get("saddr")) and _is_loopback(tl.client.get("daddr")):
        return False
    return tl.proto in ("tcp", "udp") and bool(tl.client.get("sport"))


def build_stories(timelines: Iterable[Timeline], proxy_events: Iterable[Event],
                  lab: LabView) -> tuple[list[Story], list[Timeline]]:
    """(stories, the flows no story took), both in time order."""
    j = _Joiner(list(timelines), list(proxy_events), lab)
    stories: list[Story] = []
    last_root: dict[str, int] = {}  # pod IP -> start of its previous user connection
    for tl in j.tls:
        if tl.flow_id in j.used_flows or not _root(tl, lab):
            continue
        src_ip = tl.client.get("saddr")
        legs: list[Leg] = []
        decisions: list[Event] = []
        notes: list[str] = []
        # DNS lookups this pod made since its previous user connection.
        since = last_root.get(src_ip or "", 0)
        for d in j.tls:
            if (_is_dns(d) and d.client.get("saddr") == src_ip and since <= _start(d) <= _start(tl)
                    and d.flow_id not in j.used_flows):
                cap = _captured_at(d)
                legs.append(j.leg("DNS" + (f" → ztunnel :{cap[1]}" if cap else ""), d))
        last_root[src_ip or ""] = _start(tl)
        cap = _captured_at(tl)
        if cap is not None:
            where = lab.label(cap[0])
            name = f"app → {j.proxy_name(cap[0], cap[1])}"
            if where != lab.who(src_ip):  # captured at the destination pod
                name += f" ({where})"
            legs.append(j.leg(name, tl))
        else:
            legs.append(j.leg(f"{lab.who(src_ip)} → {lab.who(tl.client.get('daddr'))}", tl))
        j.follow(tl, legs, decisions, notes)
        c = tl.client
        title = (f"{lab.who(src_ip)} {c.get('saddr')}:{c.get('sport')} → "
                 f"{c.get('daddr')}:{c.get('dport')}")
        target = lab.who(c.get("daddr"))
        if target != c.get("daddr"):
            title += f" ({target})"
        pod = lab.pod(src_ip)
        stories.append(Story(id=len(stories) + 1, title=title,
                             pod=f"{pod['namespace']}/{pod['name']}" if pod else None,
                             client=dict(c), legs=sorted(legs, key=lambda x: _start(x.timeline)),
                             decisions=sorted(decisions, key=lambda e: e.ts_ns), notes=notes))
    rest = [tl for tl in j.tls if tl.flow_id not in j.used_flows]
    return stories, rest


def unjoined_records(stories: list[Story], proxy_events: Iterable[Event]) -> list[Event]:
    """Log lines no story took (a connection whose packets were out of scope)."""
    taken = {id(d) for s in stories for d in s.decisions}
    return [e for e in proxy_events if id(e) not in taken]
