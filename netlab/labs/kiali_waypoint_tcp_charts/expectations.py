"""Checks over the evidence: what each Kiali version's edge panel showed, and the series behind it.

Each check is pure and says what it saw. The words "empty" and "charted" mean what
Kiali's UI shows: a chart with no datapoint prints "Not enough traffic to generate
chart" (SummaryPanelEdge.tsx); any datapoint draws a chart.
"""

from __future__ import annotations

from typing import Any, Callable

from netlab.labs.framework import Evidence, dig
from netlab.telemetry.kiali.panel import NOT_ENOUGH_TRAFFIC

Check = Callable[[Evidence], tuple[bool, str]]


def charts(ev: Evidence, version: str, edge: str) -> list[dict[str, Any]]:
    got = dig(ev, "kiali.panels", {}).get(version, {}).get(edge)  # versions hold dots: no dotted path
    if not got:
        raise KeyError(f"no panel of Kiali {version} for {edge} in the evidence")
    return list(got)


def _main(cs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The edge's own tcp_sent and tcp_received charts (not the waypoint reverse fetch)."""
    return [c for c in cs if not c["reverse"]]


def _say(c: dict[str, Any]) -> str:
    if c["message"]:
        return f"{c['name']}: {'null' if c['null'] else str(len(c['series'])) + ' series'} → {c['message']!r}"
    return f"{c['name']}: {len(c['points'])} point(s), peak {max(v for _, v in c['points']):.1f} B/s"


def asks(version: str, edge: str, reporter: str, workload: str) -> Check:
    """The panel asks the destination workload's inbound metrics with this reporter."""
    def check(ev: Evidence) -> tuple[bool, str]:
        cs = _main(charts(ev, version, edge))
        ok = bool(cs) and all(c["reporter"] == reporter and f'destination_workload="{workload}"' in c["promql"]
                              and f'reporter="{reporter}"' in c["promql"] for c in cs)
        return ok, "; ".join(c["promql"] for c in cs)
    return check


def empty(version: str, edge: str) -> Check:
    def check(ev: Evidence) -> tuple[bool, str]:
        cs = _main(charts(ev, version, edge))
        ok = bool(cs) and all(c["null"] and not c["points"] and c["message"] == NOT_ENOUGH_TRAFFIC for c in cs)
        return ok, "; ".join(_say(c) for c in cs)
    return check


def charted(version: str, edge: str, source_workload: str) -> Check:
    """Every chart of the edge has datapoints, from the edge's source, with a rate above 0."""
    def check(ev: Evidence) -> tuple[bool, str]:
        cs = _main(charts(ev, version, edge))
        ok = bool(cs) and all(
            c["points"] and max(v for _, v in c["points"]) > 0
            and any(s.get("source_workload") == source_workload for s in c["series"]) for c in cs)
        return ok, "; ".join(_say(c) for c in cs)
    return check


def series_of(ev: Evidence, **labels: str) -> list[dict[str, Any]]:
    return [s for s in ev.get("series", []) if all(s.get(k) == v for k, v in labels.items())]


def leg_reported_by_destination(ev: Evidence) -> tuple[bool, str]:
    """Prometheus holds the waypoint → ratings-v1 bytes, reported by the destination ztunnel
    only; the client ztunnel's source series ends at the waypoint; the clients got their echo."""
    from_wp = series_of(ev, source_workload="waypoint", destination_workload="ratings-v1")
    dest = [s for s in from_wp if s.get("reporter") == "destination" and s.get("app") == "ztunnel"
            and s["value"] > 0]
    source = [s for s in from_wp if s.get("reporter") == "source"]
    to_wp = series_of(ev, reporter="source", source_workload="sleep", destination_workload="waypoint")
    clients = ev.get("clients", [])
    echoed = bool(clients) and all(c.get("exit_code") == 0 and c.get("echoed") == c.get("sent") for c in clients)
    seen = (f"waypoint→ratings-v1 series: {len(dest)} reporter=destination from ztunnel with bytes, "
            f"{len(source)} reporter=source; sleep→waypoint reporter=source: {len(to_wp)}; clients: "
            + ", ".join(f"exit {c.get('exit_code')} sent {c.get('sent')} echoed {c.get('echoed')}" for c in clients))
    return bool(dest) and not source and bool(to_wp) and echoed, seen


def graph_edge(version: str, source: str, target: str, waypoint: str | None) -> Check:
    """The graph draws the edge, with Kiali's `waypoint.direction`."""
    def check(ev: Evidence) -> tuple[bool, str]:
        edges = dig(ev, "kiali.edges", {}).get(version, [])
        hit = next((e for e in edges if e["source"] == source and e["target"] == target), None)
        if hit is None:
            return False, "no such edge; edges: " + "; ".join(f"{e['source']} -> {e['target']}" for e in edges)
        return hit["waypoint"] == waypoint, f"{source} -> {target}: {hit['rate']} B/s, waypoint {hit['waypoint']}"
    return check
