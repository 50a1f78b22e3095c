"""Which Kiali behaviours each emulated version has.

Every difference between the versions is one named flag here, so the query and
graph code reads as "if this version has fix X", and a reader can find each fix's
upstream commit in one place (docs/kiali.md has the same table with sources).
"""

from __future__ import annotations

from dataclasses import dataclass

VERSIONS: tuple[str, ...] = ("1.89", "2.0", "2.1")


@dataclass(frozen=True)
class Features:
    """One Kiali version's behaviour, as flags named after what changed."""

    version: str
    # kiali v1.89.0 → v2.0.0: the graph and appender queries take the ambientTraffic
    # option (GetReporter/GetApp). In 1.89 the reporter is always `<r>|waypoint` for
    # requests and plain `<r>` for TCP, with no app filter.
    ambient_option: bool
    # v2.0.0: the base graph's TCP groupBy starts with `app,` (ztunnel detection).
    tcp_group_by_app: bool
    # kiali#7887 (v2.1.0): TCP queries use GetApp()+GetReporter() instead of a
    # hard-coded reporter.
    tcp_get_reporter: bool
    # kiali#7879 (v2.1.0): the security appender's query 2 also asks ztunnel's
    # reporter="source" TCP series.
    security_ztunnel_source: bool
    # v2.0.0: waypoints are detected on ztunnel series while building the traffic map,
    # edges touching one carry `waypoint: {direction}`, and an edge touching a
    # waypoint with no security entry is forced to isMTLS 100. In v1.89.0 the ambient
    # appender matches nodes by name and, when waypoints are shown, drops their edges.
    waypoint_edges: bool
    # v2.1.0: isWaypoint ignores the cluster when the series' cluster is "unknown".
    waypoint_unknown_cluster: bool
    # kiali#7784 (v2.0.0): the edge panel's TCP reporter is `destination` for edges
    # from a waypoint.
    panel_waypoint_from_destination: bool


_FEATURES: dict[str, Features] = {
    "1.89": Features("1.89", ambient_option=False, tcp_group_by_app=False, tcp_get_reporter=False,
                     security_ztunnel_source=False, waypoint_edges=False,
                     waypoint_unknown_cluster=False, panel_waypoint_from_destination=False),
    "2.0": Features("2.0", ambient_option=True, tcp_group_by_app=True, tcp_get_reporter=False,
                    security_ztunnel_source=False, waypoint_edges=True,
                    waypoint_unknown_cluster=False, panel_waypoint_from_destination=True),
    "2.1": Features("2.1", ambient_option=True, tcp_group_by_app=True, tcp_get_reporter=True,
                    security_ztunnel_source=True, waypoint_edges=True,
                    waypoint_unknown_cluster=True, panel_waypoint_from_destination=True),
}


def features(version: str) -> Features:
    """The flags of `version`; accepts "2.1", "2.1.0" and "v2.1.0"."""
    v = version.strip().removeprefix("v")
    parts = v.split(".")
    key = ".".join(parts[:2]) if len(parts) >= 2 else v
    if key not in _FEATURES:
        raise ValueError(f"Kiali version {version!r} is not emulated; choose one of {', '.join(VERSIONS)}")
    return _FEATURES[key]
