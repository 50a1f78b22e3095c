"""The Kiali view of a running lab: the pure Kiali package fed by the lab's Prometheus.

netlab/telemetry/kiali/ knows Kiali's queries and folding and nothing of labs; this
module supplies what a Kiali server would: the Prometheus to query (`query_fn`,
`query_range_fn`), the namespaces to graph, and the waypoints, which Kiali lists by
the pod label `gateway.istio.io/managed=istio.io-mesh-controller` and netlab reads
from the lab's pods (its plan, recorded at `up`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from netlab import mesh
from netlab.errors import NetlabError
from netlab.kernel.ownership import LabRecord
from netlab.telemetry.kiali.graph import QueryLog, build_graph, find_edges, node_of
from netlab.telemetry.kiali.options import GraphOptions, Waypoint
from netlab.telemetry.kiali.panel import PanelSeries, edge_panel, panel_edge_from_json
from netlab.telemetry.kiali.render import RenderError, panel_html, render_html, render_svg
from netlab.telemetry.promclient import Prometheus

FORMATS = ("json", "svg", "html")


def waypoints(record: LabRecord) -> frozenset[Waypoint]:
    """The lab's waypoint workloads, found the way Kiali finds them: by pod label."""
    return frozenset(
        Waypoint(p["namespace"], p["deployment"] or p["name"], mesh.TELEMETRY_CLUSTER)
        for p in record.summary.get("pods", [])
        if p.get("labels", {}).get(mesh.GATEWAY_MANAGED_LABEL) == mesh.WAYPOINT_MANAGED_VALUE)


def namespaces(record: LabRecord) -> list[str]:
    """Every namespace with a pod, sorted: what a user would tick in Kiali's selector."""
    return sorted({p["namespace"] for p in record.summary.get("pods", [])})


@dataclass
class LabGraph:
    """One Kiali graph of a lab, with every query it ran (for explaining an edge)."""

    version: str
    namespaces: list[str]
    options: GraphOptions
    graph: dict[str, Any]
    log: QueryLog


def kiali_graph(prom: Prometheus, record: LabRecord, version: str, wanted: list[str] | None = None,
                security: bool = False, ambient: str = "total", duration: int = 600,
                service_nodes: bool = True) -> LabGraph:
    """Kiali `version`'s namespace graph of the lab, from the lab's Prometheus."""
    known = namespaces(record)
    chosen = list(wanted) if wanted else known
    unknown = [ns for ns in chosen if ns not in known]
    if unknown:
        raise NetlabError(f"lab {record.lab} has no pods in namespace {unknown[0]!r}; "
                          f"namespaces: {', '.join(known)}")
    try:
        opts = GraphOptions(show_security=security, ambient=ambient, duration=duration,
                            inject_service_nodes=service_nodes, waypoints=waypoints(record))
    except ValueError as e:
        raise NetlabError(str(e)) from None
    log = QueryLog()
    try:
        graph = build_graph(version, chosen, prom.query, opts, log=log)
    except ValueError as e:  # an unknown Kiali version
        raise NetlabError(str(e)) from None
    return LabGraph(version, chosen, opts, graph, log)


def _split(ref: str) -> tuple[str | None, str]:
    ns, _, name = ref.rpartition("/")
    return (ns or None), name


def edge(lg: LabGraph, src: str, dst: str) -> dict[str, Any]:
    """The one edge SRC → DST (workload or service names, optionally `ns/name`)."""
    (sns, sname), (dns, dname) = _split(src), _split(dst)
    hits = find_edges(lg.graph, sname, dname, sns, dns)
    if len(hits) > 1:  # a workload and its injected service node share a name: the workload edge
        hits = [h for h in hits if all(node_of(lg.graph, h[end])["nodeType"] == "workload"
                                       for end in ("source", "target"))] or hits
    if len(hits) == 1:
        return hits[0]
    have = []
    for e in lg.graph["elements"]["edges"]:
        a, b = node_of(lg.graph, e["data"]["source"]), node_of(lg.graph, e["data"]["target"])
        have.append(f"{a['namespace']}/{a.get('workload') or a.get('service')} -> "
                    f"{b['namespace']}/{b.get('workload') or b.get('service')}")
    if not hits:
        raise NetlabError(f"Kiali {lg.version}'s graph has no edge {src} -> {dst}; its edges: "
                          f"{'; '.join(have) or 'none (no traffic yet?)'}")
    raise NetlabError(f"{src} -> {dst} matches {len(hits)} edges; name them as ns/name")


def edge_charts(prom: Prometheus, lg: LabGraph, src: str, dst: str,
                query_time: float | None = None) -> list[PanelSeries]:
    """The edge side panel's TCP charts, from Kiali `lg.version`'s range queries."""
    e = edge(lg, src, dst)
    try:
        panel_edge = panel_edge_from_json(lg.graph, e)
        return edge_panel(lg.version, panel_edge, prom.query_range,
                          query_time=time.time() if query_time is None else query_time,
                          duration=lg.options.duration)
    except NotImplementedError as err:
        raise NetlabError(f"{src} -> {dst}: {err}; graph without service nodes "
                          "(--no-service-nodes) to chart the workload-to-workload edge") from None


def charts_text(charts: list[PanelSeries]) -> list[str]:
    """Each chart as Kiali would show it: its series, or Kiali's empty-chart text."""
    lines = []
    for c in charts:
        head = f"{c.query.name}{' (waypoint reverse)' if c.query.reverse else ''} reporter={c.query.reporter}"
        lines.append(head)
        lines.append(f"  query: {c.query.promql}")
        if c.message:
            lines.append(f"  {c.message}")
        else:
            lines += [f"  {ts:.0f} {v:.3f}" for ts, v in c.points]
    return lines


def render(lg: LabGraph, fmt: str, charts: list[PanelSeries] | None = None,
           edge_title: str = "") -> str:
    """The graph as Kiali-shaped JSON, an SVG, or an HTML page (graph plus edge charts)."""
    title = f"Kiali {lg.version}: {', '.join(lg.namespaces)}"
    if fmt == "json":
        return json.dumps(lg.graph, indent=1) + "\n"
    try:
        svg = render_svg(lg.graph, lg.options.show_security, title)
    except RenderError as e:
        raise NetlabError(str(e)) from None
    if fmt == "svg":
        return svg
    if fmt == "html":
        extra = panel_html(edge_title, charts) if charts is not None else ""
        return render_html([(f"Kiali {lg.version}", svg, extra)], title=title)
    raise NetlabError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")
