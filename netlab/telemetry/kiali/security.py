"""Kiali's securityPolicy appender: which edges get `isMTLS`, and so the lock.

kiali#7811 lives here. The appender asks its own queries (queries.security_queries),
files each answer under the key "<source id> <dest id>" and then looks every edge
up by its own ids (docs/kiali.md):

- a policy value **overwrites** the key's earlier value for that csp, it never sums;
- unlike the base graph there is no bad-source filter, but a series whose source is
  unknown makes a key that matches no edge, which has the same effect;
- isMTLS = mtls / (mtls + other) × 100, set only when mtls > 0;
- since v2.0.0 an edge touching a waypoint with no entry is forced to 100.
"""

from __future__ import annotations

from collections.abc import Iterable

from netlab.telemetry.kiali.options import GraphOptions
from netlab.telemetry.kiali.traffic import PASSTHROUGH, UNKNOWN, InstantResult, TrafficMap, is_ok, node_id
from netlab.telemetry.kiali.versions import Features

MUTUAL_TLS = "mutual_tls"

_REQUIRED = ("source_workload_namespace", "source_workload", "source_canonical_service",
             "source_canonical_revision", "destination_service_namespace", "destination_service_name",
             "destination_workload_namespace", "destination_workload", "destination_canonical_service",
             "destination_canonical_revision", "source_principal", "destination_principal")

PolicyMap = dict[str, dict[str, float]]
PrincipalMap = dict[str, tuple[str, str]]


def _key(src: tuple[str, ...], dst: tuple[str, ...]) -> str | None:
    """"<source id> <dest id>", or None where Kiali fails to make an id and skips."""
    try:
        return f"{node_id(*src)[0]} {node_id(*dst)[0]}"
    except ValueError:
        return None


def populate_policy_map(policies: PolicyMap, principals: PrincipalMap, result: InstantResult,
                        o: GraphOptions) -> None:
    """File one appender answer: rate per csp under each key it maps to."""
    for series in result:
        m: dict[str, str] = series.get("metric", {})
        if any(k not in m for k in _REQUIRED):
            continue  # Kiali: "missing expected labels"
        csp = m.get("connection_security_policy", UNKNOWN)
        value = float(series["value"][1])
        src_cluster = m.get("source_cluster", UNKNOWN)
        dst_cluster = m.get("destination_cluster", UNKNOWN)
        src_ns = m["source_workload_namespace"]
        dst_svc_ns, dst_svc = m["destination_service_namespace"], m["destination_service_name"]
        src = (src_cluster, src_ns, "", src_ns, m["source_workload"], m["source_canonical_service"])
        dst = (dst_cluster, dst_svc_ns, dst_svc, m["destination_workload_namespace"],
               m["destination_workload"], m["destination_canonical_service"])
        pair = (m["source_principal"], m["destination_principal"])
        inject = False
        if o.inject_service_nodes and is_ok(dst_svc) and dst_svc != PASSTHROUGH:
            try:
                inject = node_id(*dst)[1] != "service"
            except ValueError:
                continue
        if inject:
            svc = (dst_cluster, dst_svc_ns, dst_svc, "", "", "")
            legs = [(src, svc), (svc, dst)]
        else:
            legs = [(src, dst)]
        for a, b in legs:
            key = _key(a, b)
            if key is None:
                continue
            policies.setdefault(key, {})[csp] = value  # overwrite, not sum
            principals.setdefault(key, pair)  # the first principals seen stay


def apply_policy_map(f: Features, tm: TrafficMap, policies: PolicyMap, principals: PrincipalMap) -> None:
    """Set isMTLS and principals on the namespace map's edges."""
    for node in tm.values():
        for e in node.edges:
            key = f"{e.source.id} {e.dest.id}"
            rates = policies.get(key)
            if rates is not None:
                mtls = rates.get(MUTUAL_TLS, 0.0)
                other = sum(v for csp, v in rates.items() if csp != MUTUAL_TLS)
                if mtls > 0:
                    e.is_mtls = mtls / (mtls + other) * 100
            elif f.waypoint_edges and (e.source.is_waypoint or e.dest.is_waypoint):
                # Kiali: edges to/from waypoints are secure by nature; no principals then.
                e.is_mtls = 100.0
            if key in principals:
                e.source_principal, e.dest_principal = principals[key]


def append_security(f: Features, tm: TrafficMap, results: Iterable[InstantResult], o: GraphOptions) -> None:
    """The whole appender for one namespace, given its queries' answers in order."""
    if not tm:
        return  # Kiali runs no appender on an empty namespace map
    policies: PolicyMap = {}
    principals: PrincipalMap = {}
    for result in results:
        populate_policy_map(policies, principals, result, o)
    apply_policy_map(f, tm, policies, principals)
