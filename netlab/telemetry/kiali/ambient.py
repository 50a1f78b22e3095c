"""Kiali's ambient finalizer: waypoint nodes and the `waypoint` data of their edges.

kiali#7774's panel logic keys on `edge.waypoint.direction`, which this sets
(kiali@v2.0.0 and @v2.1.0 `graph/telemetry/istio/appender/ambient.go`; the facts
name the fields, the rules below were read from that file):

- every edge leaving a waypoint gets direction "from";
- every edge entering one gets "to"; when the waypoint also has an edge back to the
  same node, that edge moves into the "to" edge as `fromEdge` (a bidirectional edge);
- with Display → Waypoints off, waypoint nodes and edges into them are removed,
  and nodes left with no edge in or out go too.

v1.89.0's appender is older: it finds waypoints by name among all nodes and, when
shown, marks them and drops every edge leaving them.
"""

from __future__ import annotations

from netlab.telemetry.kiali.options import GraphOptions
from netlab.telemetry.kiali.traffic import TrafficMap, waypoint_matches
from netlab.telemetry.kiali.versions import Features


def _finalize_189(f: Features, tm: TrafficMap, o: GraphOptions) -> None:
    deleted: set[str] = set()
    for nid, n in list(tm.items()):
        name = n.workload or n.app or n.service
        if not any(waypoint_matches(f, w, n.cluster, n.namespace, name) for w in o.waypoints):
            continue
        if o.show_waypoints:
            n.is_waypoint = True
            n.edges = []
        else:
            deleted.add(nid)
            del tm[nid]
    if deleted:
        for n in tm.values():
            n.edges = [e for e in n.edges if e.dest.id not in deleted]


def _finalize(tm: TrafficMap, o: GraphOptions) -> None:
    waypoints = {nid: n for nid, n in tm.items() if n.is_waypoint}
    orphans: dict[str, bool] = {}
    for nid, n in waypoints.items():
        if not o.show_waypoints:
            for e in n.edges:
                orphans[e.dest.id] = True
            del tm[nid]
        else:
            for e in n.edges:
                e.waypoint_direction = "from"
    if not waypoints:
        return
    for nid, n in tm.items():
        if not o.show_waypoints:
            n.edges = [e for e in n.edges if e.dest.id not in waypoints]
            if not n.edges:
                orphans[nid] = True
            continue
        for to_edge in n.edges:
            wp = waypoints.get(to_edge.dest.id)
            if wp is None:
                continue
            to_edge.waypoint_direction = "to"
            back = [e for e in wp.edges if e.dest.id == nid]
            if back:
                to_edge.from_edge = back[-1]
                wp.edges = [e for e in wp.edges if e.dest.id != nid]
    if o.show_waypoints:
        return
    for n in tm.values():
        for e in n.edges:
            orphans[e.dest.id] = False
    for nid, no_incoming in orphans.items():
        if no_incoming and nid in tm and not tm[nid].edges:
            del tm[nid]


def finalize_ambient(f: Features, tm: TrafficMap, o: GraphOptions) -> None:
    """Run the version's ambient finalizer on the merged traffic map."""
    if f.waypoint_edges:
        _finalize(tm, o)
    else:
        _finalize_189(f, tm, o)
