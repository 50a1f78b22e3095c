"""Kiali's traffic map: nodes and edges folded from the base graph queries' answers.

Folded as Kiali folds them (docs/kiali.md; kiali@v2.0.0/v2.1.0 istio.go
`populateTrafficMap`, `addTraffic`; graph/types.go `Id`), because the lock of
kiali#7811 is decided by whether a security entry's key equals an edge's
"<source id> <dest id>":

- series missing an expected label are skipped, and bad source telemetry is
  dropped before any edge is made (`is_bad_source_telemetry`);
- node ids are Kiali's workload-graph ids (`node_id`);
- a service node is injected between source and workload unless an end is a
  waypoint;
- the same series reported twice (source and destination proxy) counts once per
  edge: the hash leaves the reporter out.

Only the workload graph type is modelled. Kiali's HandleDestination and
IsBadDestTelemetry corner cases, response codes and flags per edge, and node
traffic totals are left out (the facts do not cover them; the labs need none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netlab.telemetry.kiali.options import GraphOptions, Waypoint
from netlab.telemetry.kiali.versions import Features

UNKNOWN = "unknown"
PASSTHROUGH = "PassthroughCluster"

# A Prometheus instant-query result: [{"metric": {...}, "value": [ts, "str"]}, ...].
InstantResult = list[dict[str, Any]]

_SOURCE_LABELS = ("source_workload_namespace", "source_workload", "source_canonical_service",
                  "source_canonical_revision")
_DEST_LABELS = ("destination_service_namespace", "destination_service", "destination_service_name",
                "destination_workload_namespace", "destination_workload",
                "destination_canonical_service", "destination_canonical_revision")


def is_ok(value: str) -> bool:
    """Kiali's IsOK: set and not "unknown"."""
    return value not in ("", UNKNOWN)


def node_id(cluster: str, service_ns: str, service: str, workload_ns: str, workload: str,
            app: str) -> tuple[str, str]:
    """(id, nodeType) of a workload-graph node, as Kiali's graph.Id names it.

    Raises ValueError where Kiali logs "Failed ID gen" and skips the series."""
    namespace = workload_ns if is_ok(workload_ns) else service_ns
    if namespace == UNKNOWN and workload == UNKNOWN and app == UNKNOWN and service == "":
        return f"{cluster}_unknown_source", "unknown"
    if workload == UNKNOWN and app == UNKNOWN and service == UNKNOWN:
        return f"svc_{cluster}_{namespace}_unknown", "service"
    if not (is_ok(workload) or is_ok(app) or is_ok(service)):
        raise ValueError(f"no id for cluster={cluster} namespace={namespace} workload={workload} "
                         f"app={app} service={service}")
    if not is_ok(workload):
        return f"svc_{cluster}_{namespace}_{service if is_ok(service) else UNKNOWN}", "service"
    return f"wl_{cluster}_{namespace}_{workload}", "workload"


def is_bad_source_telemetry(cluster: str, cluster_present: bool, namespace: str, workload: str,
                            app: str) -> bool:
    """Kiali's IsBadSourceTelemetry: a namespace with neither workload nor app, or a
    present but unknown source_cluster. This is what drops the sidecar's
    destination series in kiali#7811 (its source is unknown)."""
    if is_ok(namespace) and not is_ok(workload) and not is_ok(app):
        return True
    return is_ok(namespace) and cluster_present and not is_ok(cluster)


@dataclass(eq=False)
class Node:
    """A traffic-map node; `id` is the readable traffic-map id, hashed only in JSON."""

    id: str
    node_type: str
    cluster: str
    namespace: str
    workload: str = ""
    app: str = ""
    version: str = ""
    service: str = ""
    is_waypoint: bool = False
    is_injected: bool = False
    dest_services: set[tuple[str, str, str]] = field(default_factory=set)
    edges: list["Edge"] = field(default_factory=list)


@dataclass(eq=False)
class Edge:
    """A traffic-map edge for one protocol."""

    source: Node
    dest: Node
    protocol: str
    rate: float = 0.0
    ts_hashes: set[tuple[Any, ...]] = field(default_factory=set)
    is_mtls: float | None = None  # percent; unset unless the security appender set it
    source_principal: str | None = None
    dest_principal: str | None = None
    waypoint_direction: str | None = None  # "to" | "from", set by the ambient finalizer
    from_edge: "Edge | None" = None


TrafficMap = dict[str, Node]


def waypoint_matches(f: Features, wp: Waypoint, cluster: str, namespace: str, workload: str) -> bool:
    """Kiali's isWaypoint; since v2.1.0 an "unknown" series cluster matches any."""
    cluster_ok = wp.cluster == cluster or (f.waypoint_unknown_cluster and cluster == UNKNOWN)
    return wp.workload == workload and wp.namespace == namespace and cluster_ok


def _add_node(tm: TrafficMap, cluster: str, service_ns: str, service: str, workload_ns: str,
              workload: str, app: str, version: str) -> Node:
    nid, ntype = node_id(cluster, service_ns, service, workload_ns, workload, app)
    node = tm.get(nid)
    if node is None:
        namespace = workload_ns if is_ok(workload_ns) else service_ns
        node = Node(nid, ntype, cluster, namespace, workload, app, version, service)
        tm[nid] = node
    return node


def _add_edge_traffic(source: Node, dest: Node, protocol: str, value: float, ts_hash: tuple[Any, ...]) -> bool:
    edge = next((e for e in source.edges if e.dest.id == dest.id and e.protocol == protocol), None)
    if edge is None:
        edge = Edge(source, dest, protocol)
        source.edges.append(edge)
    if ts_hash in edge.ts_hashes:
        return False
    edge.ts_hashes.add(ts_hash)
    edge.rate += value
    return True


def _protocol_of(metric: str) -> str:
    if metric.startswith("istio_tcp"):
        return "tcp"
    if metric.endswith("_messages_total"):
        return "grpc"
    return ""  # requests: the series' request_protocol decides


def populate(tm: TrafficMap, result: InstantResult, metric: str, f: Features, o: GraphOptions) -> None:
    """Fold one query's answer into the namespace's traffic map."""
    base_protocol = _protocol_of(metric)
    is_requests = base_protocol == ""
    for series in result:
        m: dict[str, str] = series.get("metric", {})
        value = float(series["value"][1])
        if any(k not in m for k in _SOURCE_LABELS + _DEST_LABELS):
            continue  # Kiali: "missing expected TS labels"
        if (is_requests or base_protocol == "tcp") and "response_flags" not in m:
            continue
        protocol, code = base_protocol, ""
        flags = m.get("response_flags", "")
        src_cluster = m.get("source_cluster", UNKNOWN)
        dst_cluster = m.get("destination_cluster", UNKNOWN)
        src_ns, src_wl = m["source_workload_namespace"], m["source_workload"]
        src_app, src_ver = m["source_canonical_service"], m["source_canonical_revision"]
        if is_bad_source_telemetry(src_cluster, "source_cluster" in m, src_ns, src_wl, src_app):
            continue
        dst_svc_ns, dst_svc, dst_svc_name = (m["destination_service_namespace"], m["destination_service"],
                                             m["destination_service_name"])
        dst_wl_ns, dst_wl = m["destination_workload_namespace"], m["destination_workload"]
        dst_app, dst_ver = m["destination_canonical_service"], m["destination_canonical_revision"]
        if is_requests:
            if "request_protocol" not in m or "response_code" not in m:
                continue
            protocol, code = m["request_protocol"], m["response_code"]
            if (protocol == "grpc" and o.grpc != "requests") or (protocol == "http" and o.http != "requests"):
                continue
        src_wp = dst_wp = False
        if f.waypoint_edges and protocol == "tcp" and m.get("app") == "ztunnel":
            src_wp = any(waypoint_matches(f, w, src_cluster, src_ns, src_wl) for w in o.waypoints)
            if not src_wp:
                dst_wp = any(waypoint_matches(f, w, dst_cluster, dst_wl_ns, dst_wl) for w in o.waypoints)
        try:
            inject = False
            if o.inject_service_nodes and is_ok(dst_svc_name) and dst_svc_name != PASSTHROUGH:
                _, dst_type = node_id(dst_cluster, dst_svc_ns, dst_svc_name, dst_wl_ns, dst_wl, dst_app)
                inject = dst_type != "service" and not src_wp and not dst_wp
            # A waypoint is always a workload node: its app is cleared.
            src_app = "" if src_wp else src_app
            dst_app = "" if dst_wp else dst_app
            source = _add_node(tm, src_cluster, src_ns, "", src_ns, src_wl, src_app, src_ver)
            dest = _add_node(tm, dst_cluster, dst_svc_ns, dst_svc_name, dst_wl_ns, dst_wl, dst_app, dst_ver)
        except ValueError:
            continue  # Kiali: "Skipping addTraffic"
        source.is_waypoint |= src_wp
        dest.is_waypoint |= dst_wp
        # One hash per (metric, both ends, code, flags, host): no reporter, so the
        # source and destination proxies' copies of a series count once.
        ts_hash = (metric, source.id, src_cluster, src_ns, src_wl, src_app, src_ver,
                   dest.id, dst_cluster, dst_svc_ns, dst_svc_name, dst_wl_ns, dst_wl, dst_app, dst_ver,
                   code, flags, dst_svc)
        service = (dst_cluster, dst_svc_ns, dst_svc_name)
        if inject:
            svc = _add_node(tm, dst_cluster, dst_svc_ns, dst_svc_name, "", "", "", "")
            svc.is_injected = True
            if _add_edge_traffic(source, svc, protocol, value, ts_hash):
                if is_ok(dst_svc_name):
                    svc.dest_services.add(service)
                _add_edge_traffic(svc, dest, protocol, value, ts_hash)
                if is_ok(dst_svc_name):
                    dest.dest_services.add(service)
        elif _add_edge_traffic(source, dest, protocol, value, ts_hash) and is_ok(dst_svc_name):
            dest.dest_services.add(service)


def merge(into: TrafficMap, namespace: str, ns_map: TrafficMap) -> None:
    """Kiali's MergeTrafficMaps: a node seen in two namespace maps keeps the copy
    from its own namespace's map, and gains the other copy's edges that it lacks
    (same destination and protocol); edge data is never combined."""
    for nid, ns_node in ns_map.items():
        node = into.get(nid)
        if node is None:
            into[nid] = ns_node
            continue
        if ns_node.namespace == namespace:
            into[nid] = ns_node
            node, ns_node = ns_node, node
        for e in ns_node.edges:
            if not any(x.dest.id == e.dest.id and x.protocol == e.protocol for x in node.edges):
                node.edges.append(e)
