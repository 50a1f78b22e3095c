"""Kiali's PromQL, character for character, per version.

The expected strings are written from mesh-facts-2 §A1, §A2 and §B (which quote
Kiali's code and its own test expectations), not from netlab's generator. Where
the facts are silent (Kiali 1.89's graph queries; the trailing space left when
`> 0` is dropped) the expectation comes from the Kiali tag named beside it, as
recorded in docs/kiali.md.
"""

from __future__ import annotations

import pytest

from netlab.telemetry.kiali.options import GraphOptions
from netlab.telemetry.kiali.panel import PanelEdge, PanelNode, panel_tcp_queries, rate_params, tcp_reporter
from netlab.telemetry.kiali.queries import graph_queries, security_queries
from netlab.telemetry.kiali.versions import features

# §A1 groupBy of the securityPolicy appender.
SEC_BY = ("source_cluster,source_workload_namespace,source_workload,source_canonical_service,"
          "source_canonical_revision,source_principal,destination_cluster,destination_service_namespace,"
          "destination_service_name,destination_workload_namespace,destination_workload,"
          "destination_canonical_service,destination_canonical_revision,destination_principal,"
          "connection_security_policy")
# §A2 groupBys of the base graph.
HTTP_BY = ("source_cluster,source_workload_namespace,source_workload,source_canonical_service,"
           "source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,"
           "destination_service_name,destination_workload_namespace,destination_workload,"
           "destination_canonical_service,destination_canonical_revision,request_protocol,response_code,"
           "grpc_response_status,response_flags")
PEERS = ("source_cluster,source_workload_namespace,source_workload,source_canonical_service,"
         "source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,"
         "destination_service_name,destination_workload_namespace,destination_workload,"
         "destination_canonical_service,destination_canonical_revision")
TCP_BY = "app," + PEERS + ",response_flags"
TCP_BY_189 = PEERS + ",response_flags"  # kiali@v1.89.0 istio.go: no `app,` yet


def sec(metric: str, selector: str) -> str:
    """One appender sub-query: no space before the range, `> 0` (§A1)."""
    return f"sum(rate({metric}{{{selector}}}[600s])) by ({SEC_BY}) > 0"


def rnd(q: str) -> str:
    return f"round({q},0.001)"


def by_kind(queries: list, kind: str) -> str:
    return next(q.promql for q in queries if q.kind == kind)


# --- §A1: the securityPolicy appender -------------------------------------------------

def test_security_query2_v20_is_the_documented_example() -> None:
    """§A1 "BEFORE the fix (v2.0.0)" example, defaults, namespace bookinfo, query 2."""
    expected = rnd(
        f'(sum(rate(istio_requests_total{{reporter=~"destination|waypoint",source_workload_namespace="bookinfo"}}[600s])) by ({SEC_BY}) > 0)'
        f' OR (sum(rate(istio_tcp_sent_bytes_total{{reporter="destination",source_workload_namespace="bookinfo"}}[600s])) by ({SEC_BY}) > 0)')
    assert by_kind(security_queries("2.0", "bookinfo"), "inside") == expected


def test_security_query2_v21_adds_ztunnel_source_and_get_reporter() -> None:
    """§A1 "AFTER kiali#7887": the full v2.1.0 default query 2."""
    ns = "bookinfo"
    expected = rnd(
        "(" + sec("istio_requests_total", f'reporter=~"destination|waypoint",source_workload_namespace="{ns}"') + ")"
        " OR (" + sec("istio_tcp_sent_bytes_total", f'reporter=~"destination|waypoint",source_workload_namespace="{ns}"') + ")"
        " OR (" + sec("istio_tcp_sent_bytes_total", f'app="ztunnel",reporter="source",source_workload_namespace="{ns}"') + ")")
    assert by_kind(security_queries("2.1", ns), "inside") == expected


@pytest.mark.parametrize("version,tcp_reporter", [
    ("1.89", 'reporter="destination"'),
    ("2.0", 'reporter="destination"'),
    ("2.1", 'reporter=~"destination|waypoint"'),
])
def test_security_query1_never_gets_the_ztunnel_query(version: str, tcp_reporter: str) -> None:
    """§A1: query 1 ("from outside") selector; kiali#7879 touched query 2 only."""
    scope = 'source_workload_namespace!="ns-b",destination_service_namespace="ns-b"'
    expected = rnd("(" + sec("istio_requests_total", f'reporter=~"destination|waypoint",{scope}') + ")"
                   " OR (" + sec("istio_tcp_sent_bytes_total", f"{tcp_reporter},{scope}") + ")")
    assert by_kind(security_queries(version, "ns-b"), "outside") == expected


def test_security_v20_ambient_waypoint_and_none_filter_ztunnel() -> None:
    """§A1 helpers: GetApp() prefix before a hard-coded TCP reporter in v2.0.0;
    GetReporter gives the exact reporter for none."""
    q = by_kind(security_queries("2.0", "x", GraphOptions(ambient="none")), "inside")
    assert q == rnd("(" + sec("istio_requests_total", 'reporter="destination",source_workload_namespace="x"') + ")"
                    " OR (" + sec("istio_tcp_sent_bytes_total", 'app!="ztunnel",reporter="destination",source_workload_namespace="x"') + ")")
    q = by_kind(security_queries("2.0", "x", GraphOptions(ambient="waypoint")), "inside")
    assert 'istio_tcp_sent_bytes_total{app!="ztunnel",reporter="destination",source_workload_namespace="x"}' in q
    assert 'istio_requests_total{reporter=~"destination|waypoint",source_workload_namespace="x"}' in q


def test_security_v21_ambient_waypoint_gets_no_ztunnel_query() -> None:
    """§A1: with ambient=waypoint v2.1 gives `app!="ztunnel",reporter=~"destination|waypoint"`
    and (not total/ztunnel) no ztunnel source sub-query."""
    q = by_kind(security_queries("2.1", "x", GraphOptions(ambient="waypoint")), "inside")
    assert q == rnd("(" + sec("istio_requests_total", 'reporter=~"destination|waypoint",source_workload_namespace="x"') + ")"
                    " OR (" + sec("istio_tcp_sent_bytes_total", 'app!="ztunnel",reporter=~"destination|waypoint",source_workload_namespace="x"') + ")")


def test_security_v21_ambient_ztunnel_tcp_total() -> None:
    """§A1: ambient=ztunnel keeps the ztunnel query; tcp=total asks sent then received,
    and the ztunnel sub-queries follow, sent then received. No swap in the appender."""
    q = by_kind(security_queries("2.1", "x", GraphOptions(ambient="ztunnel", tcp="total")), "inside")
    scope = 'source_workload_namespace="x"'
    assert q == rnd(
        "(" + sec("istio_requests_total", f'reporter="destination",{scope}') + ")"
        " OR (" + sec("istio_tcp_sent_bytes_total", f'reporter="destination",{scope}') + ")"
        " OR (" + sec("istio_tcp_received_bytes_total", f'reporter="destination",{scope}') + ")"
        " OR (" + sec("istio_tcp_sent_bytes_total", f'app="ztunnel",reporter="source",{scope}') + ")"
        " OR (" + sec("istio_tcp_received_bytes_total", f'app="ztunnel",reporter="source",{scope}') + ")")


def test_security_grpc_message_subqueries() -> None:
    """§A1: request messages if grpc is sent/total, response messages if received/total."""
    q = by_kind(security_queries("2.0", "x", GraphOptions(grpc="total", http="none", tcp="none")), "inside")
    scope = 'reporter=~"destination|waypoint",source_workload_namespace="x"'
    assert q == rnd("(" + sec("istio_request_messages_total", scope) + ")"
                    " OR (" + sec("istio_response_messages_total", scope) + ")")


def test_security_no_rates_sends_nothing() -> None:
    assert security_queries("2.1", "x", GraphOptions(http="none", grpc="none", tcp="none")) == []


# --- §A2: the base graph -------------------------------------------------------------

def test_graph_v20_tcp_outgoing_is_the_documented_example() -> None:
    """§A2 BEFORE example: rateTcp=sent asks istio_tcp_received_bytes_total (the swap),
    hard-coded reporter, space before the range, `> 0`, round()."""
    qs = graph_queries("2.0", "bookinfo")
    tcp = [q for q in qs if q.metric.startswith("istio_tcp")]
    assert {q.metric for q in tcp} == {"istio_tcp_received_bytes_total"}
    assert by_kind(tcp, "outgoing") == rnd(
        f'sum(rate(istio_tcp_received_bytes_total{{reporter="source",source_workload_namespace="bookinfo"}} [600s])) by ({TCP_BY}) > 0')


def test_graph_three_queries_per_metric_v21() -> None:
    """§A2: q0 unserviced, q1 incoming, q2 outgoing; kiali#7887's TCP GetReporter."""
    qs = graph_queries("2.1", "ns-b")
    http = [q for q in qs if q.metric == "istio_requests_total"]
    assert [q.promql for q in http] == [
        rnd(f'sum(rate(istio_requests_total{{reporter=~"source|waypoint",source_workload_namespace!="ns-b",destination_workload_namespace="unknown",destination_workload="unknown",destination_service=~"^.+\\\\.ns-b\\\\..+$"}} [600s])) by ({HTTP_BY}) > 0'),
        rnd(f'sum(rate(istio_requests_total{{reporter=~"destination|waypoint",destination_workload_namespace="ns-b"}} [600s])) by ({HTTP_BY}) > 0'),
        rnd(f'sum(rate(istio_requests_total{{reporter=~"source|waypoint",source_workload_namespace="ns-b"}} [600s])) by ({HTTP_BY}) > 0'),
    ]
    tcp = [q.promql for q in qs if q.metric == "istio_tcp_received_bytes_total"]
    assert tcp == [
        rnd(f'sum(rate(istio_tcp_received_bytes_total{{reporter=~"source|waypoint",source_workload_namespace!="ns-b",destination_workload_namespace="unknown",destination_workload="unknown",destination_service=~"^.+\\\\.ns-b\\\\..+$"}} [600s])) by ({TCP_BY}) > 0'),
        rnd(f'sum(rate(istio_tcp_received_bytes_total{{reporter=~"destination|waypoint",destination_workload_namespace="ns-b"}} [600s])) by ({TCP_BY}) > 0'),
        rnd(f'sum(rate(istio_tcp_received_bytes_total{{reporter=~"source|waypoint",source_workload_namespace="ns-b"}} [600s])) by ({TCP_BY}) > 0'),
    ]
    assert len(qs) == 6


def test_the_regex_escapes_are_two_backslashes() -> None:
    """§A2 quotes `destination_service=~"^.+\\\\.NS\\\\..+$"`: two backslash characters."""
    q0 = by_kind(graph_queries("2.1", "ns-b"), "unserviced")
    assert '"^.+' + "\\\\" + ".ns-b" + "\\\\" + '..+$"' in q0


@pytest.mark.parametrize("ambient,tcp_sel", [
    ("waypoint", 'app!="ztunnel",reporter="source"'),
    ("none", 'app!="ztunnel",reporter="source"'),
    ("ztunnel", 'reporter="source"'),
    ("total", 'reporter="source"'),
])
def test_graph_v20_get_app_prefix(ambient: str, tcp_sel: str) -> None:
    """§A2 BEFORE: GetApp() then hard-coded reporter for TCP."""
    q = by_kind([q for q in graph_queries("2.0", "x", GraphOptions(ambient=ambient))
                 if q.metric.startswith("istio_tcp")], "outgoing")
    assert q == rnd(f'sum(rate(istio_tcp_received_bytes_total{{{tcp_sel},source_workload_namespace="x"}} [600s])) by ({TCP_BY}) > 0')


@pytest.mark.parametrize("ambient,http_rep,tcp_rep", [
    ("total", 'reporter=~"destination|waypoint"', 'reporter=~"destination|waypoint"'),
    ("waypoint", 'reporter=~"destination|waypoint"', 'app!="ztunnel",reporter=~"destination|waypoint"'),
    ("ztunnel", 'reporter="destination"', 'reporter="destination"'),
    ("none", 'reporter="destination"', 'app!="ztunnel",reporter="destination"'),
])
def test_graph_v21_get_reporter_per_ambient(ambient: str, http_rep: str, tcp_rep: str) -> None:
    """§A1 helpers applied in §A2 AFTER kiali#7887: GetApp()+GetReporter()."""
    qs = graph_queries("2.1", "x", GraphOptions(ambient=ambient))
    assert by_kind([q for q in qs if q.metric == "istio_requests_total"], "incoming") == rnd(
        f'sum(rate(istio_requests_total{{{http_rep},destination_workload_namespace="x"}} [600s])) by ({HTTP_BY}) > 0')
    assert by_kind([q for q in qs if q.metric.startswith("istio_tcp")], "incoming") == rnd(
        f'sum(rate(istio_tcp_received_bytes_total{{{tcp_rep},destination_workload_namespace="x"}} [600s])) by ({TCP_BY}) > 0')


def test_graph_v189_has_no_ambient_option_and_no_app_group() -> None:
    """kiali@v1.89.0 istio.go (facts silent): requests always `<r>|waypoint`, TCP plain
    reporter, TCP groupBy without `app,`; ambientTraffic does not exist, so it is ignored."""
    for ambient in ("total", "none"):
        qs = graph_queries("1.89", "x", GraphOptions(ambient=ambient))
        assert by_kind([q for q in qs if q.metric == "istio_requests_total"], "outgoing") == rnd(
            f'sum(rate(istio_requests_total{{reporter=~"source|waypoint",source_workload_namespace="x"}} [600s])) by ({HTTP_BY}) > 0')
        assert by_kind([q for q in qs if q.metric.startswith("istio_tcp")], "incoming") == rnd(
            f'sum(rate(istio_tcp_received_bytes_total{{reporter="destination",destination_workload_namespace="x"}} [600s])) by ({TCP_BY_189}) > 0')


@pytest.mark.parametrize("rate,metrics", [
    ("sent", ["istio_tcp_received_bytes_total"]),
    ("received", ["istio_tcp_sent_bytes_total"]),
    ("total", ["istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total"]),
    ("none", []),
])
def test_graph_tcp_swap(rate: str, metrics: list[str]) -> None:
    """§A2: "L4 telemetry is backwards" (total's order from kiali@v2.0.0 istio.go)."""
    qs = graph_queries("2.1", "x", GraphOptions(tcp=rate))
    got = [q.metric for q in qs if q.metric.startswith("istio_tcp") and q.kind == "incoming"]
    assert got == metrics


def test_graph_idle_edges_drop_the_condition() -> None:
    """§A2: `> 0` is dropped with includeIdleEdges. Kiali's format string "by (%s) %s"
    then leaves a trailing space (kiali@v2.0.0 istio.go)."""
    q = by_kind(graph_queries("2.0", "x", GraphOptions(include_idle_edges=True, http="none", grpc="none")),
                "incoming")
    assert q == rnd(f'sum(rate(istio_tcp_received_bytes_total{{reporter="destination",destination_workload_namespace="x"}} [600s])) by ({TCP_BY}) ')


def test_graph_duration_is_whole_seconds() -> None:
    """§A1: `[<N>s]` with N = int(duration.Seconds())."""
    q = by_kind(graph_queries("2.1", "x", GraphOptions(duration=300)), "incoming")
    assert " [300s])) by (" in q


# --- §B: the edge panel ---------------------------------------------------------------

RATINGS = PanelNode("bookinfo", "ratings-v1", cluster="Kubernetes")
WAYPOINT = PanelNode("bookinfo", "waypoint", cluster="Kubernetes")
SLEEP = PanelNode("bookinfo", "sleep", cluster="Kubernetes")


def test_panel_v189_query_is_the_field_reports_query() -> None:
    """§B: the request of kiali#7774 (duration=300, rateInterval=30s, step=30,
    reporter=source) gave this tcp_sent query."""
    qs = panel_tcp_queries("1.89", PanelEdge(WAYPOINT, RATINGS, "from"), duration=300)
    sent = next(q for q in qs if q.name == "tcp_sent")
    assert sent.promql == ('sum(rate(istio_tcp_received_bytes_total{reporter="source",'
                           'destination_workload_namespace="bookinfo",destination_workload="ratings-v1",'
                           'destination_cluster="Kubernetes"}[30s])) by (source_workload)')
    received = next(q for q in qs if q.name == "tcp_received")
    assert received.promql == ('sum(rate(istio_tcp_sent_bytes_total{reporter="source",'
                               'destination_workload_namespace="bookinfo",destination_workload="ratings-v1",'
                               'destination_cluster="Kubernetes"}[30s])) by (source_workload)')


@pytest.mark.parametrize("version", ["2.0", "2.1"])
def test_panel_fix_asks_destination_for_edges_from_a_waypoint(version: str) -> None:
    """§B fix (kiali#7784): `destination` for waypoint.direction == 'from'."""
    sent = next(q for q in panel_tcp_queries(version, PanelEdge(WAYPOINT, RATINGS, "from"), duration=300)
                if q.name == "tcp_sent")
    assert sent.promql == ('sum(rate(istio_tcp_received_bytes_total{reporter="destination",'
                           'destination_workload_namespace="bookinfo",destination_workload="ratings-v1",'
                           'destination_cluster="Kubernetes"}[30s])) by (source_workload)')


@pytest.mark.parametrize("version", ["1.89", "2.0", "2.1"])
def test_panel_edges_to_a_waypoint_stay_source(version: str) -> None:
    assert tcp_reporter(version, PanelEdge(SLEEP, WAYPOINT, "to")) == "source"


@pytest.mark.parametrize("version", ["1.89", "2.0"])
def test_panel_destination_for_unknown_or_istio_sources(version: str) -> None:
    """§B before and after: aggregate/unknown sources or the Istio namespace → destination."""
    assert tcp_reporter(version, PanelEdge(PanelNode("x", "unknown", "unknown"), RATINGS)) == "destination"
    assert tcp_reporter(version, PanelEdge(PanelNode("istio-system", "gw", is_istio=True), RATINGS)) == "destination"
    assert tcp_reporter(version, PanelEdge(SLEEP, RATINGS)) == "source"


def test_panel_no_cluster_no_cluster_matcher() -> None:
    """§B label order: destination_cluster only when a cluster is known."""
    q = panel_tcp_queries("2.0", PanelEdge(SLEEP, PanelNode("b", "r")), duration=300)[0]
    assert q.promql == ('sum(rate(istio_tcp_received_bytes_total{reporter="source",'
                        'destination_workload_namespace="b",destination_workload="r"}[30s])) by (source_workload)')


def test_panel_bidirectional_reverse_fetch() -> None:
    """§B fix: a 'to' edge with a fromEdge also fetches the source node inbound,
    reporter=destination, by source_workload, kept for the waypoint."""
    qs = panel_tcp_queries("2.0", PanelEdge(SLEEP, WAYPOINT, "to", has_from_edge=True), duration=300)
    rev = [q for q in qs if q.reverse]
    assert [q.name for q in rev] == ["tcp_sent", "tcp_received"]
    assert rev[0].promql == ('sum(rate(istio_tcp_received_bytes_total{reporter="destination",'
                             'destination_workload_namespace="bookinfo",destination_workload="sleep",'
                             'destination_cluster="Kubernetes"}[30s])) by (source_workload)')
    assert rev[0].other_end_workload == "waypoint"


@pytest.mark.parametrize("duration,scrape,step", [(300, 15, 30), (600, 15, 30), (3600, 15, 120), (300, 5, 10)])
def test_rate_params(duration: int, scrape: int, step: int) -> None:
    """§B: step = max(duration/points, 2×scrape) with the graph page's 30 points."""
    assert rate_params(duration, scrape) == (step, f"{step}s")


def test_versions_accept_tags_and_refuse_others() -> None:
    assert features("v2.1.0").security_ztunnel_source
    assert not features("2.0.0").security_ztunnel_source
    with pytest.raises(ValueError, match="not emulated"):
        features("1.88")
