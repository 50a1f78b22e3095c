"""Build Kiali's namespace graph from a Prometheus, the way a given Kiali version does.

The caller owns the Prometheus: `query_fn(promql) -> result` runs one instant query
and returns the API's `data.result` list (`[{"metric": {...}, "value": [ts, "v"]}]`).
Everything else is Kiali's order of work (kiali istio.go `BuildNamespacesTrafficMap`):

1. per namespace, in the order given: the base traffic queries → a namespace map;
2. the securityPolicy appender on that map, when Display → Security is on;
3. merge into the graph (a node keeps its own namespace's copy);
4. the ambient finalizer on the merged graph (waypoints);
5. cytoscape JSON.

Kiali walks the requested namespaces in Go map order (random); netlab uses the
given order so that its output is repeatable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from netlab.telemetry.kiali.ambient import finalize_ambient
from netlab.telemetry.kiali.cytoscape import to_cytoscape
from netlab.telemetry.kiali.options import GraphOptions
from netlab.telemetry.kiali.queries import graph_queries, security_queries
from netlab.telemetry.kiali.security import append_security
from netlab.telemetry.kiali.traffic import InstantResult, TrafficMap, merge, populate
from netlab.telemetry.kiali.versions import features

QueryFn = Callable[[str], InstantResult]


@dataclass
class QueryLog:
    """Every query the graph sent and how many series came back, for reports that
    show *why* an edge has or lacks its lock."""

    entries: list[tuple[str, str, int]] = field(default_factory=list)  # (purpose, promql, series)

    def run(self, query_fn: QueryFn, purpose: str, promql: str) -> InstantResult:
        result = query_fn(promql)
        self.entries.append((purpose, promql, len(result)))
        return result


def build_traffic_map(version: str, namespaces: Iterable[str], query_fn: QueryFn,
                      options: GraphOptions | None = None, log: QueryLog | None = None) -> TrafficMap:
    """Steps 1–4: the merged, finalized traffic map (for callers that judge edges)."""
    f = features(version)
    o = options or GraphOptions()
    log = log if log is not None else QueryLog()
    graph: TrafficMap = {}
    for ns in namespaces:
        ns_map: TrafficMap = {}
        for q in graph_queries(version, ns, o):
            populate(ns_map, log.run(query_fn, f"graph {q.kind} {q.metric} {ns}", q.promql), q.metric, f, o)
        if o.show_security and ns_map:
            results = [log.run(query_fn, f"security {q.kind} {ns}", q.promql)
                       for q in security_queries(version, ns, o)]
            append_security(f, ns_map, results, o)
        merge(graph, ns, ns_map)
    finalize_ambient(f, graph, o)
    return graph


def build_graph(version: str, namespaces: Iterable[str], query_fn: QueryFn,
                options: GraphOptions | None = None, timestamp: int | None = None,
                log: QueryLog | None = None) -> dict[str, Any]:
    """Kiali's cytoscape JSON for `namespaces` as Kiali `version` would draw it."""
    o = options or GraphOptions()
    tm = build_traffic_map(version, namespaces, query_fn, o, log)
    return to_cytoscape(tm, o.duration, int(time.time()) if timestamp is None else timestamp)


def shows_lock(edge: dict[str, Any], show_security: bool) -> bool:
    """Whether Kiali's UI draws the lock on this edge JSON (docs/kiali.md):
    Security display on, the edge has traffic, and isMTLS > 0 (no other threshold)."""
    data = edge.get("data", edge)
    has_traffic = bool(data.get("traffic", {}).get("rates"))
    return show_security and has_traffic and float(data.get("isMTLS", "0")) > 0


def find_edges(graph: dict[str, Any], source_workload: str, dest_workload: str,
               source_namespace: str | None = None, dest_namespace: str | None = None) -> list[dict[str, Any]]:
    """Edges (their `data`) between two named nodes (workload, or service name for
    injected service nodes) of a cytoscape graph."""
    nodes = {n["data"]["id"]: n["data"] for n in graph["elements"]["nodes"]}

    def named(node: dict[str, Any], name: str, ns: str | None) -> bool:
        return (node.get("workload") or node.get("service")) == name and ns in (None, node["namespace"])

    return [e["data"] for e in graph["elements"]["edges"]
            if named(nodes[e["data"]["source"]], source_workload, source_namespace)
            and named(nodes[e["data"]["target"]], dest_workload, dest_namespace)]


def node_of(graph: dict[str, Any], node_hash: str) -> dict[str, Any]:
    """A node's data by its (hashed) id."""
    return next(n["data"] for n in graph["elements"]["nodes"] if n["data"]["id"] == node_hash)
