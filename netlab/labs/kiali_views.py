"""What the two Kiali labs share: Kiali's views of a lab instance as evidence, and figures.

kiali-ambient-sidecar-mtls and kiali-waypoint-tcp-charts both ask the instance's real
Prometheus the way two Kiali versions do (netlab/telemetry/kiali/) and judge what each
version would draw. This module turns those views into JSON-able evidence (graphs,
edges by name, edge-panel charts, the raw TCP series) and back into report figures:
each version's graph or charts side by side, from the same Prometheus.

A name here is `ns/workload`, or `ns/service (service)` for an injected service node.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from netlab.errors import NetlabError
from netlab.labs.sections import Figure, Text
from netlab.telemetry import lab_graph
from netlab.telemetry.kiali.graph import node_of, shows_lock
from netlab.telemetry.kiali.panel import PanelQuery, PanelSeries, edge_panel, panel_edge_from_json, rate_params
from netlab.telemetry.kiali.render import RenderError, panel_html, render_svg
from netlab.telemetry.kiali.selectors import selected
from netlab.telemetry.promclient import Prometheus, wait_for_series

TCP_METRICS = ("istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total")
# Labels that tell a TCP series' story (the rest are the pod's relabelled labels).
TELLING = ("__name__", "reporter", "app", "pod", "source_workload_namespace", "source_workload",
           "source_principal", "destination_workload_namespace", "destination_workload",
           "destination_service", "destination_principal", "connection_security_policy")

# Styles of the panel markup render.py makes (its class names), for report figures.
CSS = (".side .chart{margin:.4em 0}.side .chart code{display:block;font-size:10px;color:#57606a;"
       "word-break:break-all}.side .nochart{color:#6a6e73;font-style:italic}"
       ".side section.panel h3{font-size:13px;margin:6px 0}.side svg.sparkline{max-width:none}")


# -- reading the instance ----------------------------------------------------------------


def prometheus(instance: str) -> Prometheus:
    return Prometheus.of_lab(instance)


def wait_all(prom: Prometheus, queries: Iterable[str], timeout: float) -> None:
    """Each query returns a series before `timeout` (one shared deadline)."""
    deadline = time.monotonic() + timeout
    for q in queries:
        wait_for_series(prom, q, max(0.5, deadline - time.monotonic()))


def tcp_series(prom: Prometheus) -> list[dict[str, Any]]:
    """Every ztunnel, sidecar and waypoint TCP byte series, with its full label set and value."""
    out = []
    for metric in TCP_METRICS:
        for s in prom.query(metric):
            out.append({**s["metric"], "value": float(s["value"][1])})
    return sorted(out, key=lambda s: (s["__name__"], s.get("reporter", ""), s.get("source_workload", ""),
                                      s.get("destination_workload", "")))


def graph(prom: Prometheus, record: Any, version: str, namespaces: list[str], security: bool,
          duration: int, service_nodes: bool = True) -> lab_graph.LabGraph:
    return lab_graph.kiali_graph(prom, record, version, namespaces, security=security,
                                 duration=duration, service_nodes=service_nodes)


def node_name(node: dict[str, Any]) -> str:
    if node.get("nodeType") == "service":
        return f"{node['namespace']}/{node.get('service')} (service)"
    return f"{node['namespace']}/{node.get('workload') or node.get('app') or node.get('nodeType')}"


def edges(g: dict[str, Any], show_security: bool) -> list[dict[str, Any]]:
    """Each edge by name: its TCP rate, isMTLS as Kiali sends it, whether the lock shows."""
    out = []
    for e in g["elements"]["edges"]:
        d = e["data"]
        traffic = d.get("traffic", {})
        out.append({"source": node_name(node_of(g, d["source"])), "target": node_name(node_of(g, d["target"])),
                    "protocol": traffic.get("protocol"), "rate": (traffic.get("rates") or {}).get(traffic.get("protocol", "")),
                    "isMTLS": d.get("isMTLS"), "lock": shows_lock(d, show_security),
                    "waypoint": (d.get("waypoint") or {}).get("direction")})
    return sorted(out, key=lambda x: (x["source"], x["target"]))


def edge_between(edge_list: list[dict[str, Any]], source: str, target: str) -> dict[str, Any] | None:
    return next((e for e in edge_list if e["source"] == source and e["target"] == target), None)


def edge_text(e: dict[str, Any]) -> str:
    lock = "🔒 " if e["lock"] else ""
    extra = f", isMTLS {e['isMTLS']}" if e.get("isMTLS") is not None else ", no isMTLS"
    wp = f", waypoint edge ({e['waypoint']})" if e.get("waypoint") else ""
    return f"{lock}{e['source']} -> {e['target']}: {e['rate']} {e['protocol']}{extra}{wp}"


# -- the edge panel -----------------------------------------------------------------------


def panel(prom: Prometheus, lg: lab_graph.LabGraph, panel_version: str, src: str, dst: str,
          duration: int, scrape_interval: int, query_time: float) -> list[dict[str, Any]]:
    """Kiali `panel_version`'s edge panel for the edge SRC → DST of the graph `lg`, each
    chart as evidence: its query, Prometheus' answer (None is Kiali's `null`), the points
    the chart keeps and Kiali's message when it has none."""
    e = lab_graph.edge(lg, src, dst)
    charts = edge_panel(panel_version, panel_edge_from_json(lg.graph, e), prom.query_range,
                        query_time=query_time, duration=duration, scrape_interval=scrape_interval)
    return [chart_evidence(c) for c in charts]


def chart_evidence(c: PanelSeries) -> dict[str, Any]:
    return {"name": c.query.name, "reporter": c.query.reporter, "promql": c.query.promql,
            "reverse": c.query.reverse, "other_end": c.query.other_end_workload,
            "null": c.raw is None, "series": [s.get("metric", {}) for s in c.raw or []],
            "points": [[t, v] for t, v in c.points], "message": c.message}


def chart_series(chart: dict[str, Any]) -> PanelSeries:
    """A chart's evidence back as the PanelSeries render.py draws."""
    q = PanelQuery(chart["name"], chart["reporter"], chart["promql"], chart["other_end"], chart["reverse"])
    raw = None if chart["null"] else [{"metric": m, "values": []} for m in chart["series"]]
    return PanelSeries(q, raw, [(float(t), float(v)) for t, v in chart["points"]])


def chart_text(version: str, edge: str, chart: dict[str, Any]) -> str:
    if chart["message"]:
        answer = "null" if chart["null"] else f"{len(chart['series'])} series, none from the edge's source"
        shown = f"{answer} -> \"{chart['message']}\""
    else:
        peak = max(v for _, v in chart["points"])
        shown = f"{len(chart['points'])} point(s), peak {peak:.1f} B/s"
    rev = " (waypoint reverse)" if chart["reverse"] else ""
    return f"Kiali {version} {edge} {chart['name']}{rev} reporter={chart['reporter']}: {shown}"


def step_and_window(duration: int, scrape_interval: int) -> dict[str, Any]:
    step, window = rate_params(duration, scrape_interval)
    return {"duration": duration, "scrape_interval": scrape_interval, "step": step, "rate_interval": window}


# -- figures -------------------------------------------------------------------------------


def graph_figure(title: str, views: list[tuple[str, dict[str, Any]]], show_security: bool,
                 lines: list[str], note: str = "") -> Figure:
    """Graphs side by side, drawn by graphviz's dot; text only when dot is missing."""
    panels = []
    for heading, g in views:
        try:
            svg = render_svg(g, show_security)
            panels.append((heading, svg[svg.find("<svg"):]))  # no XML prolog inside HTML
        except RenderError as e:
            panels.append((heading, f"<p class='note'>{_esc(str(e))}</p>"))
    return Figure(title, tuple(panels), tuple(lines), note, CSS)


def panel_figure(title: str, views: list[tuple[str, list[tuple[str, list[dict[str, Any]]]]]],
                 lines: list[str], note: str = "") -> Figure:
    """Edge panels side by side: (heading, [(edge title, its charts' evidence), ...])."""
    return Figure(title, tuple((h, "".join(panel_html(edge, [chart_series(c) for c in charts])
                                           for edge, charts in body))
                               for h, body in views), tuple(lines), note, CSS)


def series_text(title: str, series: list[dict[str, Any]], queries: dict[str, str], note: str = "") -> Text:
    """The raw TCP series, each marked with the queries (by label) that select it."""
    lines, marks = [], {}
    for s in series:
        picked = [label for label, q in queries.items() if selected(q, [s])]
        labels = ",".join(f'{k}="{s[k]}"' for k in TELLING[1:] if k in s)
        line = f"{s['__name__']}{{{labels}}} {s['value']:g}"
        lines.append(line)
        if picked:
            marks[line] = "selected by " + "; ".join(picked)
    for label, q in queries.items():
        if not selected(q, series):
            line = f"({label}: selects no series) {q}"
            lines.append(line)
            marks[line] = "nothing to chart"
    return Text(title, tuple(lines), marks, note)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise NetlabError(message)


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
