"""Kiali's edge side panel for TCP edges: its range queries and what it charts.

kiali#7774 is a bug in one choice here, the reporter the panel asks for: before
kiali#7784 (1.89) a waypoint→server edge was asked as `reporter="source"`, but only
the destination ztunnel reports that leg. The panel (docs/kiali.md, "Edge panel"):

- fetches the destination node's metrics, `direction=inbound`, by `source_workload`;
- asks `tcp_sent` and `tcp_received`, which the server maps, swapped, to
  `istio_tcp_received_bytes_total` and `istio_tcp_sent_bytes_total`;
- charts only the series whose `source_workload` is the edge's source workload
  (SummaryPanelEdge.tsx `getNodeDataPoints` @v2.0.0), and prints
  "Not enough traffic to generate chart" when nothing is left.

Only workload destinations are modelled (the labs' edges end at workloads); the
facts do not cover service or app destinations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from netlab.telemetry.kiali.queries import TCP_RECEIVED, TCP_SENT
from netlab.telemetry.kiali.versions import features

NOT_ENOUGH_TRAFFIC = "Not enough traffic to generate chart"

# Kiali's panel filter names → metric, swapped ("L4 telemetry is backwards", istio#32399).
TCP_FILTERS: dict[str, str] = {"tcp_sent": TCP_RECEIVED, "tcp_received": TCP_SENT}

# The graph page asks computePrometheusRateParams for 30 points (GraphPage.tsx
# NUMBER_OF_DATAPOINTS @v1.89.0 and @v2.0.0); Kiali's default scrape interval is 15 s.
GRAPH_DATA_POINTS = 30
DEFAULT_SCRAPE_INTERVAL = 15

# A Prometheus range result: [{"metric": {...}, "values": [[ts, "value"], ...]}, ...].
RangeResult = list[dict[str, Any]]
QueryRangeFn = Callable[[str, float, float, int], RangeResult]


def rate_params(duration: int, scrape_interval: int = DEFAULT_SCRAPE_INTERVAL,
                data_points: int = GRAPH_DATA_POINTS) -> tuple[int, str]:
    """(step, rateInterval) as the UI computes them: step = max(⌊duration/points⌋,
    2×scrape), rateInterval = "<step>s" — so each point is the rate of its own step."""
    step = max(math.floor(duration / data_points), 2 * scrape_interval)
    return step, f"{step}s"


@dataclass(frozen=True)
class PanelNode:
    """One end of the edge, as the panel sees its node data."""

    namespace: str
    workload: str
    node_type: str = "workload"  # "workload", "service", "app", "unknown" or "aggregate"
    cluster: str | None = None  # known cluster → destination_cluster="<c>" in the query
    is_istio: bool = False  # the node is in the Istio control-plane namespace


@dataclass(frozen=True)
class PanelEdge:
    """A TCP edge and its `waypoint` edge data (set by Kiali's ambient appender)."""

    source: PanelNode
    dest: PanelNode
    waypoint_direction: str | None = None  # "to" | "from" | None
    has_from_edge: bool = False  # a bidirectional "to" edge that folded in its return edge


@dataclass(frozen=True)
class PanelQuery:
    """One range query of the panel, and which series the chart keeps."""

    name: str  # "tcp_sent" or "tcp_received"
    reporter: str
    promql: str
    other_end_workload: str  # the chart keeps series with source_workload == this
    reverse: bool = False  # the extra fetch for a bidirectional waypoint edge


def tcp_reporter(version: str, edge: PanelEdge) -> str:
    """The TCP reporter the panel asks for: `destination` when the source is an
    aggregate or unknown node or in the Istio namespace, and since kiali#7784 also
    for edges *from* a waypoint; `source` otherwise."""
    src = edge.source
    if src.node_type in ("aggregate", "unknown") or src.is_istio:
        return "destination"
    if features(version).panel_waypoint_from_destination and edge.waypoint_direction == "from":
        return "destination"
    return "source"


def metrics_selector(reporter: str, node: PanelNode) -> str:
    """Label matchers of an inbound workload metrics request, in the server's order:
    reporter, (query_scope: none here), workload, (request_protocol: none for TCP),
    destination_cluster when known. TCP sends includeAmbient=false, so the reporter
    is exact, never `<r>|waypoint`."""
    if node.node_type != "workload":
        raise NotImplementedError(
            f"edge panel for a {node.node_type} destination: only workload metrics are modelled")
    parts = [f'reporter="{reporter}"',
             f'destination_workload_namespace="{node.namespace}"',
             f'destination_workload="{node.workload}"']
    if node.cluster:
        parts.append(f'destination_cluster="{node.cluster}"')
    return ",".join(parts)


def metrics_query(metric: str, selector: str, rate_interval: str, by: str = "source_workload") -> str:
    """The server's range query: no space before the range, no round()."""
    return f"sum(rate({metric}{{{selector}}}[{rate_interval}])) by ({by})"


def panel_tcp_queries(version: str, edge: PanelEdge, duration: int = 600,
                      scrape_interval: int = DEFAULT_SCRAPE_INTERVAL) -> list[PanelQuery]:
    """The panel's TCP range queries for `edge`: tcp_sent and tcp_received on the
    destination workload, plus (2.0+) the reverse fetch on the source node for a
    bidirectional waypoint edge, charted as "TCP Traffic (Waypoint)"."""
    _, rate_interval = rate_params(duration, scrape_interval)
    reporter = tcp_reporter(version, edge)
    out = [PanelQuery(name, reporter,
                      metrics_query(metric, metrics_selector(reporter, edge.dest), rate_interval),
                      edge.source.workload)
           for name, metric in TCP_FILTERS.items()]
    if edge.has_from_edge and features(version).panel_waypoint_from_destination:
        # The return leg (waypoint → client) is reported by the client's side as
        # destination; the chart keeps the series whose source is the waypoint.
        out += [PanelQuery(name, "destination",
                           metrics_query(metric, metrics_selector("destination", edge.source),
                                         rate_interval),
                           edge.dest.workload, reverse=True)
                for name, metric in TCP_FILTERS.items()]
    return out


@dataclass
class PanelSeries:
    """What one chart of the panel shows."""

    query: PanelQuery
    raw: RangeResult | None  # the server's answer for this name; None is Kiali's `null`
    points: list[tuple[float, float]] = field(default_factory=list)

    @property
    def message(self) -> str | None:
        """Kiali's placeholder text when the chart has nothing to draw."""
        return NOT_ENOUGH_TRAFFIC if not self.points else None


def chart_points(raw: RangeResult | None, other_end_workload: str) -> list[tuple[float, float]]:
    """The datapoints the chart draws: the series of the other end only."""
    points: list[tuple[float, float]] = []
    for series in raw or []:
        if series.get("metric", {}).get("source_workload") != other_end_workload:
            continue
        for ts, value in series.get("values", []):
            v = float(value)
            if not math.isnan(v):
                points.append((float(ts), v))
    return sorted(points)


def edge_panel(version: str, edge: PanelEdge, query_range_fn: QueryRangeFn, query_time: float,
               duration: int = 600, scrape_interval: int = DEFAULT_SCRAPE_INTERVAL) -> list[PanelSeries]:
    """Run the panel's queries through `query_range_fn(promql, start, end, step)` over
    [query_time - duration, query_time] and return each chart's data."""
    step, _ = rate_params(duration, scrape_interval)
    out = []
    for q in panel_tcp_queries(version, edge, duration, scrape_interval):
        result = query_range_fn(q.promql, query_time - duration, query_time, step)
        raw = result or None  # the server serializes an empty matrix as null
        out.append(PanelSeries(q, raw, chart_points(raw, q.other_end_workload)))
    return out


def panel_edge_from_json(graph: dict[str, Any], edge: dict[str, Any],
                         istio_namespace: str = "istio-system") -> PanelEdge:
    """The PanelEdge of one cytoscape edge (`data` or its wrapper), as the UI reads
    its two nodes and its `waypoint` data."""
    data = edge.get("data", edge)
    nodes = {n["data"]["id"]: n["data"] for n in graph["elements"]["nodes"]}

    def end(node: dict[str, Any]) -> PanelNode:
        cluster = node.get("cluster")
        return PanelNode(node["namespace"], node.get("workload", ""), node["nodeType"],
                         cluster if cluster not in (None, "", "unknown") else None,
                         node["namespace"] == istio_namespace)

    wp = data.get("waypoint") or {}
    return PanelEdge(end(nodes[data["source"]]), end(nodes[data["target"]]),
                     wp.get("direction"), "fromEdge" in wp)
