"""Stories as text lines, each with a style word the command line turns into colour.

Why a compact view: one cross-node ambient curl is ~800 events (every hook at every hop,
every nftrace rule), and the story is about 20 facts: where each leg's SYN, SYN-ACK and
FIN went, what NAT did and by which rule, what each proxy decided, and any drop, RST or
retransmission. The compact view prints those, one line per segment with the places it
crossed; `verbose` prints every event of every leg. Both use one clock per story (ms
since its first event), so the legs read in the order they happened.

Styles: "" plain, "head" story title, "drop" (red), "reset" (red), "deny" (red),
"retx" (yellow), "proxy" (cyan), "nat" (magenta), "dim".
"""

from __future__ import annotations

import re
from typing import Any

from netlab.observe.story import LabView, Story
from netlab.observe.timeline import Hop, Timeline

Line = tuple[str, str]  # (style, text)

_FLAG_WORDS = {"S": "SYN", "SA": "SYN-ACK", "F": "FIN", "FA": "FIN", "FPA": "FIN",
               "R": "RST", "RA": "RST"}
_ACTION = re.compile(r"-j (REDIRECT|DNAT|SNAT|MASQUERADE|TPROXY|DROP|REJECT)\b")


def _ms(ts: int, t0: int) -> str:
    return f"{(ts - t0) / 1e6:9.3f} ms"


def _ep(t: dict[str, Any] | None) -> str:
    if not t:
        return "?"
    return f"{t.get('saddr')}:{t.get('sport')} → {t.get('daddr')}:{t.get('dport')}"


def _where(lab: LabView, netns: str | None, ifname: str | None = None) -> str:
    label = lab.label(netns)
    return f"{label}/{ifname}" if ifname else label


def _path(lab: LabView, hops: list[Hop]) -> str:
    """The namespaces a segment crossed, each once, in order."""
    out: list[str] = []
    for h in hops:
        label = lab.label(h.netns)
        if not out or out[-1] != label:
            out.append(label)
    if len(out) == 1:
        ifs = sorted({h.ifname or "?" for h in hops})
        return f"in {out[0]} ({', '.join(ifs)})"
    return " → ".join(out)


def _segments(tl: Timeline) -> list[list[Hop]]:
    """Packet hops grouped per segment: TCP control segments by (seq, flags), other
    packets by (IP id, direction). A segment seen twice at one place is a new attempt."""
    groups: list[list[Hop]] = []
    open_: dict[tuple[Any, ...], list[Hop]] = {}
    for h in tl.hops:
        if h.source != "bpf" or h.kind not in ("rx", "tx"):
            continue
        if tl.proto == "tcp":
            if not h.tcp_flags or not any(f in h.tcp_flags for f in "SFR"):
                continue
            key: tuple[Any, ...] = ("tcp", h.seq, h.tcp_flags)
        else:
            key = ("pkt", h.detail.get("ip_id"), h.saddr, h.sport)
        g = open_.get(key)
        if g is not None and any((x.netns, x.ifname, x.kind) == (h.netns, h.ifname, h.kind)
                                 for x in g):
            g = None  # the same place again: a retransmission, its own line
        if g is None:
            g = open_[key] = []
            groups.append(g)
        g.append(h)
    return groups


def _segment_line(lab: LabView, tl: Timeline, g: list[Hop]) -> tuple[str, str]:
    first = g[0]
    if tl.proto == "tcp":
        word = _FLAG_WORDS.get(first.tcp_flags or "", first.tcp_flags or "")
    else:
        word = (tl.proto or "pkt").upper()
    span = (g[-1].ts_ns - first.ts_ns) / 1e6
    style = "reset" if word == "RST" else ""
    return style, (f"{word:<8} {first.saddr}:{first.sport} → {first.daddr}:{first.dport}  "
                   f"{_path(lab, g)}" + (f"  ({span:.3f} ms)" if len(g) > 1 else ""))


def _compact(lab: LabView, tl: Timeline) -> list[tuple[int, str, str]]:
    items: list[tuple[int, str, str]] = []
    for g in _segments(tl):
        if tl.proto == "tcp" and g[0].tcp_flags and "R" in g[0].tcp_flags:
            continue  # RSTs get their own line, with every hop
        style, text = _segment_line(lab, tl, g)
        items.append((g[0].ts_ns, style, text))
    seen_rules: set[tuple[Any, ...]] = set()
    for h in tl.hops:
        if h.source == "conntrack" and h.kind == "ct_new":
            status = h.detail.get("status") or []
            nat = [s for s in status if s in ("DST_NAT", "SRC_NAT")]
            if nat:
                r = h.detail.get("reply") or {}
                items.append((h.ts_ns, "nat",
                              f"conntrack {_where(lab, h.netns)}: {h.daddr}:{h.dport} "
                              f"rewritten to {r.get('saddr')}:{r.get('sport')} ({', '.join(nat)})"))
        elif h.source == "nftrace":
            rule = h.detail.get("rule") or ""
            verdict = h.detail.get("verdict")
            m = _ACTION.search(rule)
            if not m and verdict != "DROP":
                continue
            key = (h.netns, rule, verdict)
            if key in seen_rules:
                continue
            seen_rules.add(key)
            drop = (m and m[1] in ("DROP", "REJECT")) or verdict == "DROP"
            text = rule or f"{h.detail.get('chain')} policy {verdict}"
            items.append((h.ts_ns, "drop" if drop else "nat",
                          f"rule {_where(lab, h.netns)}: {text}"))
        elif h.kind == "drop" and not h.detail.get("not_on_path"):
            items.append((h.ts_ns, "drop",
                          f"DROP {h.reason} in {_where(lab, h.netns, h.ifname)} "
                          f"[{h.tcp_flags or ''}] at {h.detail.get('location')}"))
    for r in tl.retransmissions:
        what = r.get("tcp_flags") or "SYN-ACK"
        items.append((r["ts_ns"], "retx",
                      f"retransmitted {_FLAG_WORDS.get(what, what)} in {_where(lab, r.get('netns'))}"
                      + (f" (attempt {r['attempt']})" if r.get("attempt") else "")))
    for r in tl.resets:
        items.append((r["ts_ns"], "reset", _reset_text(lab, r)))
    return items


def _reset_text(lab: LabView, r: dict[str, Any]) -> str:
    hops = " → ".join(f"{_where(lab, h['netns'], h.get('ifname'))} {h['kind']}"
                      for h in r["hops"])
    who = f" sent by {lab.label(r['sent_by'])}" if r.get("sent_by") else ""
    got = f", received by {lab.label(r['received_by'])}" if r.get("received_by") else ""
    return f"RST {_ep(r['tuple'])}{who}{got}; seen at: {hops}"


def _hop_text(lab: LabView, h: Hop) -> tuple[str, str]:
    bits = [f"{_where(lab, h.netns, h.ifname):<34}", f"{h.source}:{h.kind:<11}",
            *h.text_bits(("location", "chain", "verdict", "rule", "newstate", "state", "status",
                          "ts_from", "not_on_path"))]
    style = ""
    if h.kind == "drop":
        style = "dim" if h.detail.get("not_on_path") else "drop"
    elif h.tcp_flags and "R" in h.tcp_flags or h.kind in ("send_reset", "recv_reset"):
        style = "reset"
    return style, " ".join(str(b) for b in bits)


def render_story(s: Story, lab: LabView, verbose: bool = False) -> list[Line]:
    t0 = s.start_ns
    outcome = s.outcome()
    ok = outcome == "completed"
    lines: list[Line] = [("head", f"story {s.id}: {s.title}"),
                         ("" if ok else "drop", f"  outcome: {outcome}"),
                         ("dim", "  legs: " + " · ".join(leg.name for leg in s.legs))]
    width = max([len(leg.name) for leg in s.legs] + [len(d.extra.get("proxy", "")) for d in
                                                     s.decisions] + [10])
    items: list[tuple[int, str, str, str]] = []
    for leg in s.legs:
        if verbose:
            for h in leg.timeline.hops:
                style, text = _hop_text(lab, h)
                items.append((h.ts_ns, style, leg.name, text))
            continue
        items += [(ts, style, leg.name, text) for ts, style, text in _compact(lab, leg.timeline)]
        if leg.note:
            items.append((leg.timeline.hops[0].ts_ns if leg.timeline.hops else t0, "dim",
                          leg.name, leg.note))
    for d in s.decisions:
        style = "deny" if d.extra.get("denied") or d.extra.get("failed") else "proxy"
        items.append((d.ts_ns, style, d.extra.get("proxy", "proxy"), d.extra.get("decision", "")))
    for ts, style, who, text in sorted(items, key=lambda x: x[0]):
        lines.append((style, f"  {_ms(ts, t0)}  {who:<{width}}  {text}"))
    for note in s.notes:
        lines.append(("dim", f"  note: {note}"))
    return lines


def render_other(tl: Timeline, lab: LabView, verbose: bool = False) -> list[Line]:
    """A flow no story took: one line, or all its hops with `verbose`."""
    flags = []
    if tl.drops:
        flags.append(f"dropped ({tl.drops[0]['reason']})")
    if tl.resets:
        flags.append(f"{len(tl.resets)} RST")
    head = (f"flow {tl.flow_id}: {lab.who(tl.client.get('saddr'))} → "
            f"{lab.who(tl.client.get('daddr'))}, {len(tl.hops)} events"
            + (f", {', '.join(flags)}" if flags else ""))
    lines: list[Line] = [("drop" if tl.drops else "dim", head)]
    if verbose:
        t0 = tl.hops[0].ts_ns if tl.hops else 0
        for h in tl.hops:
            style, text = _hop_text(lab, h)
            lines.append((style, f"  {_ms(h.ts_ns, t0)}  {text}"))
    return lines
