"""kiali-waypoint-tcp-charts without root: the lab's Kiali reading and judging on synthetic series.

The series are the three legs mesh-facts-2 §C3 says a real Istio 1.24 reports for a TCP
connection through a waypoint; the answers come from the small PromQL evaluator of
tests/unit/test_kiali_graph.py. The lab's own reading (`read_kiali`) runs on them
unchanged, so these tests judge the whole lab except the kernel and Prometheus.
"""

from __future__ import annotations

import shutil
from types import SimpleNamespace
from typing import Any

import pytest

from netlab import mesh
from netlab.labs import registry, report
from netlab.labs.framework import VariantResult, evaluate
from netlab.labs.kiali_waypoint_tcp_charts import LAB
from netlab.labs.kiali_waypoint_tcp_charts.traffic import DURATION, SCRAPE_INTERVAL, read_kiali
from netlab.labs import kiali_views as kv
from netlab.labs.sections import Figure, Text
from netlab.telemetry.kiali.panel import NOT_ENOUGH_TRAFFIC
from tests.unit.test_kiali_graph import evaluate as instant, peer, tcp

NS = "bookinfo"
SLEEP = peer("source", NS, "sleep")
WAYPOINT_SRC = peer("source", NS, "waypoint", rev="latest")
WAYPOINT_DST = peer("destination", NS, "waypoint", rev="latest")
RATINGS = peer("destination", NS, "ratings-v1", app="ratings", sa="bookinfo-ratings")
SLEEP_AS_SRC = peer("source", NS, "sleep")


def legs(from_waypoint_reporter: str = "destination") -> list[dict[str, str]]:
    """§C3: client ztunnel → waypoint (source), the waypoint itself, destination ztunnel."""
    return (tcp("source", SLEEP, WAYPOINT_DST, NS, "ratings", app="ztunnel")
            + tcp("waypoint", SLEEP_AS_SRC, RATINGS, NS, "ratings", app=None)
            + tcp(from_waypoint_reporter, WAYPOINT_SRC, RATINGS, NS, "ratings", app="ztunnel"))


class FakeProm:
    """Prometheus' two queries over fixed series: each series' rate is 1, a range answer
    is two points per source_workload."""

    def __init__(self, series: list[dict[str, str]]) -> None:
        self.series = series

    def query(self, promql: str) -> list[dict[str, Any]]:
        return instant(promql, self.series, {})

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        from netlab.telemetry.kiali.selectors import selected

        by: dict[str, list[list[Any]]] = {}
        for s in selected(promql, self.series):
            by.setdefault(s.get("source_workload", ""), [[end - step, "40.5"], [end, "520.0"]])
        return [{"metric": {"source_workload": k}, "values": v} for k, v in by.items()]


RECORD = SimpleNamespace(lab="kwtc1n0", summary={"pods": [
    {"namespace": NS, "name": "sleep-0", "deployment": "sleep", "labels": {"app": "sleep"}},
    {"namespace": NS, "name": "ratings-v1-0", "deployment": "ratings-v1", "labels": {"app": "ratings"}},
    {"namespace": NS, "name": "waypoint-0", "deployment": "waypoint",
     "labels": {mesh.GATEWAY_MANAGED_LABEL: mesh.WAYPOINT_MANAGED_VALUE}}]})


def evidence(series: list[dict[str, str]]) -> dict[str, Any]:
    kiali = kv.step_and_window(DURATION, SCRAPE_INTERVAL)
    kiali.update(read_kiali(FakeProm(series), RECORD, 1000.0))
    return {"kiali": kiali, "series": [{**s, "value": 5000.0} for s in series],
            "clients": [{"exit_code": 0, "sent": 1000, "echoed": 1000}, {"exit_code": 0, "sent": 4000, "echoed": 4000}]}


def result(variant: str, ev: dict[str, Any]) -> VariantResult:
    v = LAB.variant(variant)
    return VariantResult(LAB.name, v.name, v.summary, v.outcome, "kwtc1n0", 8.0, evaluate(v, ev), ev)


def test_the_lab_is_registered_with_two_variants_on_one_instance() -> None:
    lab = registry.get("kiali-waypoint-tcp-charts")
    assert [v.name for v in lab.variants] == ["kiali-1.89", "kiali-2.0"]
    assert lab.sharing(["kiali-1.89", "kiali-2.0"]) == [["kiali-1.89", "kiali-2.0"]]
    assert [v.outcome.word for v in lab.variants] == ["reproduced", "fixed"]
    model = lab.topology()
    assert model.prometheus.enabled and model.prometheus.scrape_interval == "1s"
    assert "kiali#7784" in lab.explain() and "kiali#7774" in lab.explain()


def test_documented_telemetry_gives_both_outcomes() -> None:
    ev = evidence(legs())
    for name in ("kiali-1.89", "kiali-2.0"):
        r = result(name, ev)
        assert r.ok, [(v.id, v.seen) for v in r.verdicts if not v.held]
    old = ev["kiali"]["panels"]["1.89"]["waypoint->ratings-v1"]
    assert [c["message"] for c in old] == [NOT_ENOUGH_TRAFFIC] * 2 and all(c["null"] for c in old)
    assert all('reporter="source"' in c["promql"] and "[10s]" in c["promql"] for c in old)
    new = ev["kiali"]["panels"]["2.0"]["waypoint->ratings-v1"]
    assert all(c["reporter"] == "destination" and c["points"] for c in new)


def test_if_a_source_reporter_had_the_leg_the_old_panel_would_chart_it() -> None:
    """The check can fail: with a (non-existent) reporter="source" series for the waypoint's
    hop, 1.89's query selects it and the lab says "not as expected"."""
    ev = evidence(legs(from_waypoint_reporter="source"))
    r = result("kiali-1.89", ev)
    assert not r.ok
    assert {v.id for v in r.verdicts if not v.held} >= {"charts-empty", "leg-reported"}


def test_failed_clients_fail_the_leg_check() -> None:
    ev = evidence(legs())
    ev["clients"][1] = {"exit_code": 1, "stderr": "Connection refused"}
    assert not result("kiali-2.0", ev).ok


def test_sections_show_both_panels_side_by_side_and_mark_the_series() -> None:
    ev = evidence(legs())
    secs = LAB.sections(result("kiali-1.89", ev))
    charts, graphs, raw = secs
    assert isinstance(charts, Figure) and [h for h, _ in charts.panels] == [
        "Kiali 1.89 (before kiali#7784)", "Kiali 2.0 (kiali#7784)"]
    assert NOT_ENOUGH_TRAFFIC in charts.panels[0][1] and NOT_ENOUGH_TRAFFIC not in charts.panels[1][1]
    assert "<svg" in charts.panels[1][1] and "reporter=destination" in charts.panels[1][1]
    assert isinstance(graphs, Figure) and len(graphs.panels) == 2
    assert isinstance(raw, Text)
    marked = [ln for ln in raw.lines if raw.marked(ln)]
    assert any('reporter="destination"' in ln and "2.0 tcp_sent of waypoint→ratings-v1" in raw.marked(ln)
               for ln in marked)
    assert any(ln.startswith("(1.89 tcp_sent of waypoint→ratings-v1: selects no series)") for ln in raw.lines)
    md, page = report.markdown(LAB, [result("kiali-1.89", ev)]), report.html(LAB, [result("kiali-1.89", ev)])
    assert "Kiali 1.89 waypoint -> ratings-v1 tcp_sent reporter=source: null" in md
    assert page.count("class='side'") == 2


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed")
def test_graph_figure_draws_the_waypoint_edges() -> None:
    ev = evidence(legs())
    graphs = LAB.sections(result("kiali-2.0", ev))[1]
    assert isinstance(graphs, Figure)
    assert all(svg.startswith("<svg") for _, svg in graphs.panels)
    assert "waypoint (waypoint)" in graphs.panels[1][1]
