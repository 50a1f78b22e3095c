"""Kiali's graph folding, on synthetic Prometheus answers for both field reports.

The series are the ones mesh-facts-2 §A4 and §C3 say a real Istio 1.24 emits; the
answers come from a tiny evaluator of exactly the query shape Kiali sends
(`sum(rate(SEL[…])) by (…) > 0`, ` OR `-joined, round()), built on the package's
own label-matcher parser, with each series' value standing for its rate.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from netlab.telemetry.kiali.graph import build_graph, build_traffic_map, find_edges, node_of, shows_lock
from netlab.telemetry.kiali.options import GraphOptions, Waypoint
from netlab.telemetry.kiali.panel import NOT_ENOUGH_TRAFFIC, PanelEdge, PanelNode, edge_panel, panel_edge_from_json, panel_tcp_queries
from netlab.telemetry.kiali.selectors import parse_matchers, selected, selectors
from netlab.telemetry.kiali.traffic import is_bad_source_telemetry, node_id

C = "Kubernetes"
_SUB = re.compile(r"sum\(rate\((?P<sel>[a-z_]+\{.*?\})\s?\[\d+s\]\)\) by \((?P<by>[a-z_,]+)\)(?P<gt> > 0)?")


def evaluate(promql: str, series: list[dict[str, str]], values: dict[int, float]) -> list[dict[str, Any]]:
    """Instant answer of a Kiali graph/appender query over `series` (rates in `values`
    by index). `A or B` keeps B's elements only where A has no equal label set."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for m in _SUB.finditer(promql):
        sel = selectors(m.group("sel"))[0]
        by = m.group("by").split(",")
        groups: dict[tuple[tuple[str, str], ...], float] = {}
        for i, labels in enumerate(series):
            if sel.matches(labels):
                key = tuple((k, labels[k]) for k in by if k in labels)
                groups[key] = groups.get(key, 0.0) + values.get(i, 1.0)
        for key, v in groups.items():
            if (m.group("gt") and v <= 0) or key in seen:
                continue
            seen.add(key)
            out.append({"metric": dict(key), "value": [0, str(round(v, 3))]})
    return out


def fake_prometheus(series: list[dict[str, str]], values: dict[int, float] | None = None):
    vals = values or {}
    return lambda promql: evaluate(promql, series, vals)


def peer(prefix: str, ns: str, wl: str, app: str | None = None, rev: str = "v1", sa: str | None = None,
         cluster: str = C) -> dict[str, str]:
    p = {f"{prefix}_cluster": cluster, f"{prefix}_workload_namespace": ns, f"{prefix}_workload": wl,
         f"{prefix}_canonical_service": app or wl, f"{prefix}_canonical_revision": rev,
         f"{prefix}_principal": f"spiffe://cluster.local/ns/{ns}/sa/{sa or wl}"}
    return p


def tcp(reporter: str, src: dict[str, str], dst: dict[str, str], svc_ns: str, svc: str, *,
        app: str | None, csp: str = "mutual_tls", metrics: tuple[str, ...] = ("sent", "received")) -> list[dict[str, str]]:
    """TCP series of one connection as one proxy reports it (both byte counters)."""
    base = {"reporter": reporter, **src, **dst, "destination_service": f"{svc}.{svc_ns}.svc.cluster.local",
            "destination_service_namespace": svc_ns, "destination_service_name": svc,
            "connection_security_policy": csp, "response_flags": "-", "request_protocol": "tcp"}
    if app is not None:
        base["app"] = app  # Prometheus' pod-label relabelling (§A4, §G6)
    return [{"__name__": f"istio_tcp_{m}_bytes_total", **base} for m in metrics]


# --- report (a): ambient sleep (ns-a) → sidecar ratings (ns-b), kiali#7811 -------------

SLEEP = peer("source", "ns-a", "sleep")
RATINGS = peer("destination", "ns-b", "ratings-v1", app="ratings", sa="bookinfo-ratings")
# §A4: the sidecar's destination series over HBONE carries no source workload labels.
UNKNOWN_SOURCE = {"source_cluster": "unknown", "source_workload_namespace": "ns-a", "source_workload": "unknown",
                  "source_canonical_service": "unknown", "source_canonical_revision": "latest",
                  "source_principal": "spiffe://cluster.local/ns/ns-a/sa/sleep"}
REPORT_A = (tcp("source", SLEEP, RATINGS, "ns-b", "ratings", app="ztunnel")
            + tcp("destination", UNKNOWN_SOURCE, RATINGS, "ns-b", "ratings", app="ratings"))


def locked(graph: dict[str, Any], src: str, dst: str, show_security: bool = True) -> list[bool]:
    edges = find_edges(graph, src, dst)
    assert edges, f"no edge {src} → {dst}"
    return [shows_lock(e, show_security) for e in edges]


SECURITY = GraphOptions(show_security=True)


def test_report_a_v20_draws_the_edge_without_a_lock() -> None:
    g = build_graph("2.0", ["ns-a", "ns-b"], fake_prometheus(REPORT_A), SECURITY, timestamp=0)
    edge = find_edges(g, "sleep", "ratings")  # sleep → the injected service node
    assert locked(g, "sleep", "ratings") == [False]
    assert "isMTLS" not in edge[0]  # omitted when unset
    # The sidecar's series still locks the service → workload leg: its unknown-source
    # key fails, but the injected service's key does not (security_policy.go splits
    # the series into two keys and files each on its own).
    assert locked(g, "ratings", "ratings-v1") == [True]


def test_report_a_v21_draws_the_lock() -> None:
    g = build_graph("2.1", ["ns-a", "ns-b"], fake_prometheus(REPORT_A), SECURITY, timestamp=0)
    assert locked(g, "sleep", "ratings") == [True]
    assert locked(g, "ratings", "ratings-v1") == [True]
    edge = find_edges(g, "sleep", "ratings")[0]
    assert edge["isMTLS"] == "100"
    assert edge["sourcePrincipal"] == "spiffe://cluster.local/ns/ns-a/sa/sleep"


def test_report_a_the_sidecar_series_is_bad_source_telemetry() -> None:
    """§A2: the sidecar's series never makes an edge of its own (unknown source)."""
    sidecar_only = [s for s in REPORT_A if s["reporter"] == "destination"]
    g = build_graph("2.1", ["ns-a", "ns-b"], fake_prometheus(sidecar_only), SECURITY, timestamp=0)
    assert g["elements"]["edges"] == []


def test_report_a_lock_needs_the_security_display() -> None:
    g = build_graph("2.1", ["ns-a", "ns-b"], fake_prometheus(REPORT_A), GraphOptions(show_security=False), timestamp=0)
    assert locked(g, "sleep", "ratings", show_security=False) == [False]
    assert all("isMTLS" not in e["data"] for e in g["elements"]["edges"])  # the appender did not run


CONTROLS = {
    # ambient → ambient: ztunnel reports both sides with full labels.
    "ambient→ambient": (tcp("source", peer("source", "ns-a", "sleep"), peer("destination", "ns-a", "echo"), "ns-a", "echo", app="ztunnel")
                        + tcp("destination", peer("source", "ns-a", "sleep"), peer("destination", "ns-a", "echo"), "ns-a", "echo", app="ztunnel"),
                        "sleep", "echo"),
    # sidecar → ambient: the destination ztunnel knows the source by WDS.
    "sidecar→ambient": (tcp("source", peer("source", "ns-b", "productpage"), peer("destination", "ns-a", "echo"), "ns-a", "echo", app="productpage", csp="unknown")
                        + tcp("destination", peer("source", "ns-b", "productpage"), peer("destination", "ns-a", "echo"), "ns-a", "echo", app="ztunnel"),
                        "productpage", "echo"),
    # sidecar → sidecar: classic mTLS with metadata exchange.
    "sidecar→sidecar": (tcp("source", peer("source", "ns-b", "productpage"), RATINGS, "ns-b", "ratings", app="productpage", csp="unknown")
                        + tcp("destination", peer("source", "ns-b", "productpage"), RATINGS, "ns-b", "ratings", app="ratings"),
                        "productpage", "ratings"),
}


@pytest.mark.parametrize("version", ["2.0", "2.1"])
@pytest.mark.parametrize("name", list(CONTROLS))
def test_report_a_controls_are_locked_in_both(version: str, name: str) -> None:
    series, src, dst = CONTROLS[name]
    g = build_graph(version, ["ns-a", "ns-b"], fake_prometheus(series), SECURITY, timestamp=0)
    assert locked(g, src, dst) == [True]


# --- report (b): waypoint → ratings TCP charts, kiali#7774 -----------------------------

WP = Waypoint("ns-b", "waypoint", C)
CLIENT = peer("source", "ns-a", "sleep")
WAYPOINT_DST = peer("destination", "ns-b", "waypoint", rev="latest")
WAYPOINT_SRC = peer("source", "ns-b", "waypoint", rev="latest")
REPORT_B = (
    # client ztunnel → waypoint: destination_* is the waypoint, the service the original (§C3)
    tcp("source", CLIENT, WAYPOINT_DST, "ns-b", "ratings", app="ztunnel")
    # waypoint → server: only the destination ztunnel reports it
    + tcp("destination", WAYPOINT_SRC, RATINGS, "ns-b", "ratings", app="ztunnel")
    # the waypoint itself reports reporter="waypoint" (no app label on waypoint pods)
    + tcp("waypoint", CLIENT, RATINGS, "ns-b", "ratings", app=None)
)


def range_fn(series: list[dict[str, str]]):
    """A range answer: every selected series, grouped by source_workload, two points."""
    def run(promql: str, start: float, end: float, step: int) -> list[dict[str, Any]]:
        by: dict[str, list] = {}
        for s in selected(promql, series):
            by.setdefault(s.get("source_workload", ""), [[start, "1.5"], [end, "2.5"]])
        return [{"metric": {"source_workload": k}, "values": v} for k, v in by.items()]
    return run


FROM_WAYPOINT = PanelEdge(PanelNode("ns-b", "waypoint", cluster=C), PanelNode("ns-b", "ratings-v1", cluster=C), "from")
TO_WAYPOINT = PanelEdge(PanelNode("ns-a", "sleep", cluster=C), PanelNode("ns-b", "waypoint", cluster=C), "to")


def test_report_b_v189_panel_query_selects_nothing() -> None:
    for q in panel_tcp_queries("1.89", FROM_WAYPOINT, duration=300):
        assert selected(q.promql, REPORT_B) == []
    charts = edge_panel("1.89", FROM_WAYPOINT, range_fn(REPORT_B), query_time=1000.0, duration=300)
    assert [c.raw for c in charts] == [None, None]  # Kiali's {"tcp_received":null,"tcp_sent":null}
    assert [c.message for c in charts] == [NOT_ENOUGH_TRAFFIC] * 2


@pytest.mark.parametrize("version", ["2.0", "2.1"])
def test_report_b_fixed_panel_query_selects_the_destination_ztunnel_series(version: str) -> None:
    for q in panel_tcp_queries(version, FROM_WAYPOINT, duration=300):
        got = selected(q.promql, REPORT_B)
        assert len(got) == 1
        assert got[0]["reporter"] == "destination" and got[0]["app"] == "ztunnel"
        assert got[0]["source_workload"] == "waypoint"
    charts = edge_panel(version, FROM_WAYPOINT, range_fn(REPORT_B), query_time=1000.0, duration=300)
    assert all(c.message is None and c.points == [(700.0, 1.5), (1000.0, 2.5)] for c in charts)


@pytest.mark.parametrize("version", ["1.89", "2.0", "2.1"])
def test_report_b_edge_to_the_waypoint_has_data_in_all(version: str) -> None:
    charts = edge_panel(version, TO_WAYPOINT, range_fn(REPORT_B), query_time=1000.0, duration=300)
    assert charts and all(c.message is None for c in charts)


def test_report_b_chart_keeps_only_the_other_end() -> None:
    """The panel charts series whose source_workload is the edge's source only."""
    other = tcp("destination", peer("source", "ns-b", "someone-else"), RATINGS, "ns-b", "ratings", app="ztunnel")
    charts = edge_panel("2.0", FROM_WAYPOINT, range_fn(other), query_time=1000.0, duration=300)
    assert [c.raw is not None for c in charts] == [True, True]
    assert [c.message for c in charts] == [NOT_ENOUGH_TRAFFIC] * 2


@pytest.mark.parametrize("version", ["2.0", "2.1"])
def test_report_b_graph_has_waypoint_edges_both_ways(version: str) -> None:
    o = GraphOptions(show_security=True, waypoints=frozenset({WP}))
    g = build_graph(version, ["ns-a", "ns-b"], fake_prometheus(REPORT_B), o, timestamp=0)
    to = find_edges(g, "sleep", "waypoint")
    frm = find_edges(g, "waypoint", "ratings-v1")
    assert [e["waypoint"]["direction"] for e in to] == ["to"]
    assert [e["waypoint"]["direction"] for e in frm] == ["from"]
    assert node_of(g, frm[0]["source"])["isWaypoint"] is True
    # §A3: edges touching a waypoint with no matching entry are forced to 100.
    assert frm[0]["isMTLS"] == "100" and shows_lock(frm[0], True)
    # and the JSON carries what the panel reads
    assert panel_edge_from_json(g, frm[0]) == FROM_WAYPOINT


def test_report_b_graph_v189_drops_edges_leaving_a_waypoint() -> None:
    """kiali@v1.89.0 ambient appender: shown waypoints lose their outgoing edges."""
    o = GraphOptions(waypoints=frozenset({WP}))
    g = build_graph("1.89", ["ns-a", "ns-b"], fake_prometheus(REPORT_B), o, timestamp=0)
    wp = next(n["data"] for n in g["elements"]["nodes"] if n["data"].get("workload") == "waypoint")
    assert wp["isWaypoint"] is True
    assert [e for e in g["elements"]["edges"] if e["data"]["source"] == wp["id"]] == []
    # No waypoint detection while folding in 1.89, so the service node is injected.
    assert find_edges(g, "sleep", "ratings") and find_edges(g, "ratings", "waypoint")


def test_waypoints_hidden_removes_them() -> None:
    o = GraphOptions(show_waypoints=False, waypoints=frozenset({WP}))
    g = build_graph("2.1", ["ns-a", "ns-b"], fake_prometheus(REPORT_B), o, timestamp=0)
    assert not any(n["data"].get("workload") == "waypoint" for n in g["elements"]["nodes"])


def test_bidirectional_waypoint_edge_folds_the_return_edge() -> None:
    back = tcp("destination", WAYPOINT_SRC, peer("destination", "ns-a", "sleep"), "ns-a", "sleep", app="ztunnel")
    o = GraphOptions(waypoints=frozenset({WP}))
    g = build_graph("2.0", ["ns-a", "ns-b"], fake_prometheus(REPORT_B + back), o, timestamp=0)
    to = find_edges(g, "sleep", "waypoint")[0]
    assert to["waypoint"]["direction"] == "to" and "fromEdge" in to["waypoint"]
    assert find_edges(g, "waypoint", "sleep") == []


# --- the folding rules on their own --------------------------------------------------

def test_security_map_overwrites_instead_of_summing() -> None:
    """§A1: two answers with the same key and csp: the last one wins (3, not 5+3)."""
    o = GraphOptions(show_security=True, inject_service_nodes=False)
    base = tcp("destination", SLEEP, RATINGS, "ns-b", "ratings", app="ztunnel", metrics=("sent",))[0]
    answers = {
        "graph": [{"metric": {**base, "app": "ztunnel"}, "value": [0, "8"]}],
        "security": [{"metric": {**base, "connection_security_policy": "mutual_tls"}, "value": [0, "5"]},
                     {"metric": {**base, "connection_security_policy": "mutual_tls"}, "value": [0, "3"]},
                     {"metric": {**base, "connection_security_policy": "none"}, "value": [0, "1"]}],
    }

    def q(promql: str) -> list[dict[str, Any]]:
        if "connection_security_policy" in promql:
            return answers["security"] if 'destination_service_namespace="ns-b"' in promql else []
        return answers["graph"] if 'reporter="destination",destination_workload_namespace="ns-b"' in promql else []

    tm = build_traffic_map("2.0", ["ns-b"], q, o)
    edge = tm[node_id(C, "ns-a", "", "ns-a", "sleep", "sleep")[0]].edges[0]
    assert edge.is_mtls == pytest.approx(75.0)  # 3 / (3 + 1); a sum would give 8 / 9


def test_isMTLS_below_half_a_percent_prints_0_and_draws_no_lock() -> None:
    """§A3: "%.0f" → "0", and the lock needs isMTLS > 0."""
    series = (tcp("destination", SLEEP, RATINGS, "ns-b", "ratings", app="ratings", metrics=("sent",))
              + tcp("destination", SLEEP, RATINGS, "ns-b", "ratings", app="ratings", csp="none", metrics=("sent",)))
    vals = {0: 0.3, 1: 99.7}
    o = GraphOptions(show_security=True, tcp="total")
    g = build_graph("2.0", ["ns-a", "ns-b"], fake_prometheus(series, vals), o, timestamp=0)
    e = find_edges(g, "sleep", "ratings")[0]
    assert e["isMTLS"] == "0"
    assert not shows_lock(e, True)


def test_no_mtls_share_leaves_isMTLS_unset() -> None:
    """§A3: isMTLS is set only when the mutual_tls rate is above 0."""
    series = tcp("destination", SLEEP, RATINGS, "ns-b", "ratings", app="ratings", csp="none")
    g = build_graph("2.1", ["ns-a", "ns-b"], fake_prometheus(series), SECURITY, timestamp=0)
    edges = find_edges(g, "sleep", "ratings")
    assert edges and "isMTLS" not in edges[0]


def test_source_with_unknown_cluster_is_dropped() -> None:
    """§A2 IsBadSourceTelemetry case 2: a present but unknown source_cluster, even
    with a known workload, makes no edge."""
    series = tcp("destination", peer("source", "ns-a", "sleep", cluster="unknown"), RATINGS, "ns-b", "ratings",
                 app="ratings")
    g = build_graph("2.1", ["ns-a", "ns-b"], fake_prometheus(series), SECURITY, timestamp=0)
    assert g["elements"]["edges"] == []
    del series[0]["source_cluster"], series[1]["source_cluster"]  # absent label: kept, cluster "unknown"
    g = build_graph("2.1", ["ns-a", "ns-b"], fake_prometheus(series), SECURITY, timestamp=0)
    assert find_edges(g, "sleep", "ratings")


def test_same_series_from_both_reporters_counts_once() -> None:
    """Kiali's edge time-series hash leaves out the reporter."""
    series = CONTROLS["ambient→ambient"][0]
    g = build_graph("2.1", ["ns-a"], fake_prometheus(series, {i: 10.0 for i in range(len(series))}),
                    GraphOptions(inject_service_nodes=False), timestamp=0)
    e = find_edges(g, "sleep", "echo")[0]
    assert e["traffic"] == {"protocol": "tcp", "rates": {"tcp": "10.00"}}


def test_ids_and_json_shape() -> None:
    assert node_id(C, "ns-a", "", "ns-a", "sleep", "sleep") == ("wl_Kubernetes_ns-a_sleep", "workload")
    assert node_id(C, "ns-b", "ratings", "", "", "") == ("svc_Kubernetes_ns-b_ratings", "service")
    assert node_id(C, "unknown", "", "unknown", "unknown", "unknown") == ("Kubernetes_unknown_source", "unknown")
    with pytest.raises(ValueError):
        node_id("unknown", "ns-a", "", "ns-a", "unknown", "unknown")
    g = build_graph("2.1", ["ns-a", "ns-b"], fake_prometheus(REPORT_A), SECURITY, timestamp=7)
    assert g["timestamp"] == 7 and g["duration"] == 600 and g["graphType"] == "workload"
    ids = {n["data"]["id"] for n in g["elements"]["nodes"]}
    assert all(len(i) == 32 for i in ids)
    assert all(e["data"]["source"] in ids and e["data"]["target"] in ids for e in g["elements"]["edges"])


@pytest.mark.parametrize("cluster,present,ns,wl,app,bad", [
    ("Kubernetes", True, "ns-a", "unknown", "unknown", True),   # case 1
    ("unknown", True, "ns-a", "sleep", "sleep", True),           # case 2
    ("unknown", False, "ns-a", "sleep", "sleep", False),         # no source_cluster label at all
    ("Kubernetes", True, "ns-a", "unknown", "sleep", False),     # app known
    ("Kubernetes", True, "unknown", "unknown", "unknown", False),  # namespace unknown: the unknown node
])
def test_is_bad_source_telemetry(cluster: str, present: bool, ns: str, wl: str, app: str, bad: bool) -> None:
    assert is_bad_source_telemetry(cluster, present, ns, wl, app) is bad


def test_matcher_parser() -> None:
    ms = parse_matchers('a="x",b=~"y|z",c!="w",d!~"v.*",e="q\\"uote\\\\"')
    assert [(m.name, m.op, m.value) for m in ms] == [
        ("a", "=", "x"), ("b", "=~", "y|z"), ("c", "!=", "w"), ("d", "!~", "v.*"), ("e", "=", 'q"uote\\')]
    labels = {"a": "x", "b": "z", "c": "v", "d": "u"}
    assert all(m.matches(labels) for m in ms[:4])
    assert not ms[1].matches({"b": "yz"})  # anchored
    assert ms[2].matches({})  # missing label is ""


def test_selectors_finds_every_selector_in_a_joined_query() -> None:
    from netlab.telemetry.kiali.queries import security_queries
    q = [s for s in security_queries("2.1", "ns-a") if s.kind == "inside"][0].promql
    sels = selectors(q)
    assert [s.metric for s in sels] == ["istio_requests_total", "istio_tcp_sent_bytes_total", "istio_tcp_sent_bytes_total"]
    assert sels[2].get("app").value == "ztunnel" and sels[2].get("reporter").value == "source"
