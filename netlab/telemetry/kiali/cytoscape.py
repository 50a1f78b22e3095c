"""The traffic map as Kiali's cytoscape JSON (graph/config/cytoscape/cytoscape.go).

The shape is Kiali's so that a reader can hold netlab's JSON next to a real
Kiali's `/api/namespaces/graph` answer:

- node and edge ids are md5 hex digests, of the traffic-map id and of
  "<source hash>.<target hash>.<protocol>";
- `isMTLS` is a string formatted "%.0f" and omitted when unset (docs/kiali.md);
- rates are strings with the protocol's precision (2 decimals for http, grpc, tcp);
- nodes are sorted by cluster, namespace, app, version, service, workload; edges
  by source, target, protocol.

Only the fields the labs read are emitted (no health, boxes, response codes or
node traffic totals); `healthData` is kept as null because Kiali always sends it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from netlab.telemetry.kiali.traffic import Edge, Node, TrafficMap

RATE_PRECISION = 2


def node_hash(node_id: str) -> str:
    return hashlib.md5(node_id.encode()).hexdigest()


def edge_hash(source_hash: str, target_hash: str, protocol: str) -> str:
    return hashlib.md5(f"{source_hash}.{target_hash}.{protocol}".encode()).hexdigest()


def format_mtls(percent: float) -> str:
    """isMTLS as Kiali prints it: "%.0f", so 0.4 % is "0" and draws no lock."""
    return f"{percent:.0f}"


def node_data(n: Node) -> dict[str, Any]:
    d: dict[str, Any] = {"id": node_hash(n.id), "nodeType": n.node_type, "cluster": n.cluster,
                         "namespace": n.namespace}
    for key, value in (("workload", n.workload), ("app", n.app), ("version", n.version),
                       ("service", n.service)):
        if value:
            d[key] = value
    if n.dest_services:
        d["destServices"] = [{"cluster": c, "namespace": ns, "name": name}
                             for c, ns, name in sorted(n.dest_services)]
    d["healthData"] = None
    if n.is_waypoint:
        d["isWaypoint"] = True
    return d


def edge_data(e: Edge, source_id: str) -> dict[str, Any]:
    """One edge's data; `source_id` is the traffic-map id of the node holding it."""
    src, dst = node_hash(source_id), node_hash(e.dest.id)
    d: dict[str, Any] = {"id": edge_hash(src, dst, e.protocol), "source": src, "target": dst}
    if e.dest_principal:
        d["destPrincipal"] = e.dest_principal
    if e.is_mtls is not None:
        d["isMTLS"] = format_mtls(e.is_mtls)
    if e.source_principal:
        d["sourcePrincipal"] = e.source_principal
    traffic: dict[str, Any] = {"protocol": e.protocol}
    if e.rate > 0:
        traffic["rates"] = {e.protocol: f"{e.rate:.{RATE_PRECISION}f}"}
    d["traffic"] = traffic
    if e.waypoint_direction:
        wp: dict[str, Any] = {"direction": e.waypoint_direction}
        if e.from_edge is not None:
            # Kiali converts the folded return edge with the "to" edge's source node id.
            wp["fromEdge"] = edge_data(e.from_edge, source_id)
        d["waypoint"] = wp
    return d


def to_cytoscape(tm: TrafficMap, duration: int, timestamp: int) -> dict[str, Any]:
    """Kiali's `Config` JSON for a workload graph."""
    nodes = sorted((node_data(n) for n in tm.values()),
                   key=lambda d: (d["cluster"], d["namespace"], d.get("app", ""), d.get("version", ""),
                                  d.get("service", ""), d.get("workload", "")))
    edges = sorted((edge_data(e, nid) for nid, n in tm.items() for e in n.edges),
                   key=lambda d: (d["source"], d["target"], d["traffic"]["protocol"]))
    return {"timestamp": timestamp, "duration": duration, "graphType": "workload",
            "elements": {"nodes": [{"data": d} for d in nodes], "edges": [{"data": d} for d in edges]}}
