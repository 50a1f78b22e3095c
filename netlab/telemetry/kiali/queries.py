"""The exact PromQL Kiali sends, per version.

The field reports turn on single characters of these strings (a reporter regex, a
missing `app="ztunnel"` sub-query), so they are built with the same fragments, in
the same order, as Kiali builds them (docs/kiali.md):

- the namespace graph's base traffic queries (`graph_queries`),
- the securityPolicy appender's two queries per namespace (`security_queries`),
- the edge side panel's TCP range queries (`panel_tcp_queries`, in panel.py's terms).

Every graph and appender query is sent wrapped in `round(…,0.001)`; the panel's
metrics queries are not.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlab.telemetry.kiali.options import GraphOptions
from netlab.telemetry.kiali.versions import Features, features

# groupBy of the base graph's istio_requests_total queries (§A2).
HTTP_GROUP_BY = (
    "source_cluster,source_workload_namespace,source_workload,source_canonical_service,"
    "source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,"
    "destination_service_name,destination_workload_namespace,destination_workload,"
    "destination_canonical_service,destination_canonical_revision,request_protocol,response_code,"
    "grpc_response_status,response_flags"
)
# The source and destination labels shared by the TCP and gRPC-message groupBys.
_PEER_LABELS = (
    "source_cluster,source_workload_namespace,source_workload,source_canonical_service,"
    "source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,"
    "destination_service_name,destination_workload_namespace,destination_workload,"
    "destination_canonical_service,destination_canonical_revision"
)
# gRPC message queries group by the peers only (kiali@v2.0.0 istio.go; facts silent).
GRPC_MESSAGES_GROUP_BY = _PEER_LABELS
# TCP (§A2): `app,` first since v2.0.0 (it flags ztunnel series), then the peers and flags.
TCP_GROUP_BY = "app," + _PEER_LABELS + ",response_flags"
TCP_GROUP_BY_189 = _PEER_LABELS + ",response_flags"
# groupBy of the securityPolicy appender (§A1).
SECURITY_GROUP_BY = (
    "source_cluster,source_workload_namespace,source_workload,source_canonical_service,"
    "source_canonical_revision,source_principal,destination_cluster,destination_service_namespace,"
    "destination_service_name,destination_workload_namespace,destination_workload,"
    "destination_canonical_service,destination_canonical_revision,destination_principal,"
    "connection_security_policy"
)

REQUESTS = "istio_requests_total"
REQUEST_MESSAGES = "istio_request_messages_total"
RESPONSE_MESSAGES = "istio_response_messages_total"
TCP_SENT = "istio_tcp_sent_bytes_total"
TCP_RECEIVED = "istio_tcp_received_bytes_total"


def get_reporter(reporter: str, ambient: str) -> str:
    """Kiali's GetReporter (§A1): waypoint-reported series join in when the user
    asked for waypoint or total ambient traffic."""
    if ambient in ("waypoint", "total"):
        return f'reporter=~"{reporter}|waypoint"'
    return f'reporter="{reporter}"'


def get_app(ambient: str) -> str:
    """Kiali's GetApp (§A1): a prefix that drops ztunnel series when the user asked
    for waypoint-only or no ambient traffic."""
    return 'app!="ztunnel",' if ambient in ("waypoint", "none") else ""


def round_query(query: str) -> str:
    """The wrapper Kiali's graph promQuery puts around every graph/appender query."""
    return f"round({query},0.001)"


def _requests_reporter(f: Features, reporter: str, ambient: str) -> str:
    """Reporter matcher of request and gRPC-message queries. 1.89 has no ambient
    option and always asks `<r>|waypoint`, which is what total gives later."""
    return get_reporter(reporter, ambient if f.ambient_option else "total")


def _tcp_reporter(f: Features, reporter: str, ambient: str) -> str:
    """Reporter part of TCP selectors, app prefix included: hard-coded before
    kiali#7887, GetApp()+GetReporter() after; no app filter at all in 1.89."""
    if not f.ambient_option:
        return f'reporter="{reporter}"'
    if f.tcp_get_reporter:
        return get_app(ambient) + get_reporter(reporter, ambient)
    return get_app(ambient) + f'reporter="{reporter}"'


def tcp_graph_metrics(tcp_rate: str) -> list[str]:
    """The base graph's TCP metrics for rateTcp: swapped on purpose ("L4 telemetry
    is backwards", istio/istio#32399), `total` in Kiali's order (received first)."""
    return {"sent": [TCP_RECEIVED], "received": [TCP_SENT],
            "total": [TCP_RECEIVED, TCP_SENT], "none": []}[tcp_rate]


def grpc_message_metrics(grpc_rate: str) -> list[str]:
    """gRPC message metrics for rateGrpc (no swap: these count messages, not bytes)."""
    return {"sent": [REQUEST_MESSAGES], "received": [RESPONSE_MESSAGES],
            "total": [REQUEST_MESSAGES, RESPONSE_MESSAGES]}.get(grpc_rate, [])


@dataclass(frozen=True)
class GraphQuery:
    """One instant query of the namespace graph, as sent (`promql`, round()-wrapped)."""

    namespace: str
    metric: str
    kind: str  # "unserviced" (q0), "incoming" (q1) or "outgoing" (q2)
    promql: str


def _traffic_query(metric: str, selector: str, seconds: int, group_by: str, idle: str) -> str:
    # The space before the range and the one before the idle condition are Kiali's:
    # with includeIdleEdges the query ends in "by (…) " (a trailing space).
    return f"sum(rate({metric}{{{selector}}} [{seconds}s])) by ({group_by}) {idle}"


def _three_selectors(reporter_of: dict[str, str], ns: str) -> list[tuple[str, str]]:
    """q0/q1/q2 selectors (§A2); `reporter_of` maps source/destination to the
    reporter part, which for TCP already ends the app prefix."""
    return [
        ("unserviced",
         f'{reporter_of["source"]},source_workload_namespace!="{ns}",'
         f'destination_workload_namespace="unknown",destination_workload="unknown",'
         f'destination_service=~"^.+\\\\.{ns}\\\\..+$"'),
        ("incoming", f'{reporter_of["destination"]},destination_workload_namespace="{ns}"'),
        ("outgoing", f'{reporter_of["source"]},source_workload_namespace="{ns}"'),
    ]


def graph_queries(version: str, namespace: str, options: GraphOptions | None = None) -> list[GraphQuery]:
    """Every instant query Kiali's namespace graph sends for one namespace, in
    Kiali's order: requests, gRPC messages, TCP; q0, q1, q2 for each metric."""
    f = features(version)
    o = options or GraphOptions()
    seconds = int(o.duration)
    idle = "" if o.include_idle_edges else "> 0"
    out: list[GraphQuery] = []

    def add(metric: str, group_by: str, reporter_of: dict[str, str]) -> None:
        for kind, selector in _three_selectors(reporter_of, namespace):
            inner = _traffic_query(metric, selector, seconds, group_by, idle)
            out.append(GraphQuery(namespace, metric, kind, round_query(inner)))

    req = {r: _requests_reporter(f, r, o.ambient) for r in ("source", "destination")}
    if o.http == "requests" or o.grpc == "requests":
        add(REQUESTS, HTTP_GROUP_BY, req)
    for metric in grpc_message_metrics(o.grpc):
        add(metric, GRPC_MESSAGES_GROUP_BY, req)
    tcp = {r: _tcp_reporter(f, r, o.ambient) for r in ("source", "destination")}
    group_by = TCP_GROUP_BY if f.tcp_group_by_app else TCP_GROUP_BY_189
    for metric in tcp_graph_metrics(o.tcp):
        add(metric, group_by, tcp)
    return out


@dataclass(frozen=True)
class SecurityQuery:
    """One of the securityPolicy appender's two instant queries for a namespace."""

    namespace: str
    kind: str  # "outside" (query 1: from outside the namespace) or "inside" (query 2)
    promql: str


def _security_sub(metric: str, selector: str, seconds: int) -> str:
    # No space before the range here, unlike the base graph (§A1).
    return f"sum(rate({metric}{{{selector}}}[{seconds}s])) by ({SECURITY_GROUP_BY}) > 0"


def _or_join(parts: list[str]) -> str:
    return " OR ".join(f"({p})" for p in parts)


def security_queries(version: str, namespace: str, options: GraphOptions | None = None) -> list[SecurityQuery]:
    """The appender's query 1 ("outside") and query 2 ("inside") for a namespace, as
    sent. A query with no sub-query (all rates none) is left out, as Kiali sends none."""
    f = features(version)
    o = options or GraphOptions()
    seconds = int(o.duration)
    ns = namespace
    req = _requests_reporter(f, "destination", o.ambient)
    tcp = _tcp_reporter(f, "destination", o.ambient)
    scopes = {
        "outside": f'source_workload_namespace!="{ns}",destination_service_namespace="{ns}"',
        "inside": f'source_workload_namespace="{ns}"',
    }
    out: list[SecurityQuery] = []
    for kind, scope in scopes.items():
        subs: list[str] = []
        if o.http == "requests" or o.grpc == "requests":
            subs.append(_security_sub(REQUESTS, f"{req},{scope}", seconds))
        if o.grpc in ("sent", "total"):
            subs.append(_security_sub(REQUEST_MESSAGES, f"{req},{scope}", seconds))
        if o.grpc in ("received", "total"):
            subs.append(_security_sub(RESPONSE_MESSAGES, f"{req},{scope}", seconds))
        if o.tcp in ("sent", "total"):
            subs.append(_security_sub(TCP_SENT, f"{tcp},{scope}", seconds))
        if o.tcp in ("received", "total"):
            subs.append(_security_sub(TCP_RECEIVED, f"{tcp},{scope}", seconds))
        # kiali#7879: ztunnel's source-reported TCP, query 2 only, for total/ztunnel.
        if kind == "inside" and f.security_ztunnel_source and o.ambient in ("total", "ztunnel"):
            zt = f'app="ztunnel",reporter="source",{scope}'
            if o.tcp in ("sent", "total"):
                subs.append(_security_sub(TCP_SENT, zt, seconds))
            if o.tcp in ("received", "total"):
                subs.append(_security_sub(TCP_RECEIVED, zt, seconds))
        if subs:
            out.append(SecurityQuery(ns, kind, round_query(_or_join(subs))))
    return out
