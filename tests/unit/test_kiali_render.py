"""The Kiali pictures: dot's SVG with rates and padlocks, sparklines, the HTML page."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from netlab.telemetry.kiali.panel import NOT_ENOUGH_TRAFFIC, PanelQuery, PanelSeries
from netlab.telemetry.kiali.render import edge_label, panel_html, render_html, render_svg, sparkline_svg, to_dot

SVG = "{http://www.w3.org/2000/svg}"


def node(i: str, wl: str, ns: str, **extra: object) -> dict:
    return {"data": {"id": i, "nodeType": "workload", "cluster": "Kubernetes", "namespace": ns,
                     "workload": wl, "healthData": None, **extra}}


GRAPH = {"timestamp": 0, "duration": 600, "graphType": "workload", "elements": {
    "nodes": [node("a" * 32, "sleep", "ns-a"), node("b" * 32, "ratings-v1", "ns-b"),
              node("c" * 32, "echo", "ns-a")],
    "edges": [
        {"data": {"id": "1" * 32, "source": "a" * 32, "target": "b" * 32, "isMTLS": "100",
                  "traffic": {"protocol": "tcp", "rates": {"tcp": "12.50"}}}},
        {"data": {"id": "2" * 32, "source": "a" * 32, "target": "c" * 32,
                  "traffic": {"protocol": "tcp", "rates": {"tcp": "3.00"}}}},
    ]}}

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed (scripts/setup.sh)")


def edge_groups(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {g.get("id"): g for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("edge")}


@needs_dot
def test_svg_has_rates_and_a_padlock_only_on_the_mtls_edge() -> None:
    svg = render_svg(GRAPH, show_security=True, title="Kiali 2.1")
    edges = edge_groups(svg)
    locked, plain = edges["e_" + "1" * 32], edges["e_" + "2" * 32]
    assert [t.text for t in locked.iter(f"{SVG}text")] == ["12.50 B/s"]
    assert [t.text for t in plain.iter(f"{SVG}text")] == ["3.00 B/s"]
    assert len([g for g in locked.iter(f"{SVG}g") if g.get("class") == "lock"]) == 1
    assert not [g for g in plain.iter(f"{SVG}g") if g.get("class") == "lock"]


@needs_dot
def test_no_padlock_without_the_security_display() -> None:
    svg = render_svg(GRAPH, show_security=False)
    assert 'class="lock"' not in svg


def test_dot_marks_only_locked_edges() -> None:
    dot = to_dot(GRAPH, show_security=True)
    assert dot.count('class="mtls"') == 1
    assert edge_label(GRAPH["elements"]["edges"][0]["data"]) == "12.50 B/s"


def test_sparkline_and_empty_chart() -> None:
    assert sparkline_svg([]) == f'<span class="nochart">{NOT_ENOUGH_TRAFFIC}</span>'
    svg = sparkline_svg([(0.0, 1.0), (30.0, 3.0), (60.0, 2.0)], width=100, height=20)
    root = ET.fromstring(svg)
    points = root.find(f"{SVG}polyline").get("points").split()
    assert len(points) == 3 and points[0].startswith("2.0,") and points[1].endswith(",2.0")
    assert len(root.findall(f"{SVG}circle")) == 3


def test_a_chart_of_one_datapoint_still_shows_it() -> None:
    root = ET.fromstring(sparkline_svg([(10.0, 4.0)], width=100, height=20))
    (dot,) = root.findall(f"{SVG}circle")
    assert 0 < float(dot.get("cx")) < 100 and 0 < float(dot.get("cy")) < 20


@needs_dot
def test_html_embeds_svgs_side_by_side_with_panels() -> None:
    q = PanelQuery("tcp_sent", "source", "sum(rate(x{}[30s])) by (source_workload)", "waypoint")
    panel = panel_html("waypoint → ratings-v1", [PanelSeries(q, None, [])])
    page = render_html([("Kiali 2.0", render_svg(GRAPH, True), panel), ("Kiali 2.1", render_svg(GRAPH, True), "")])
    assert page.count("<svg") == 2 and "<?xml" not in page
    assert NOT_ENOUGH_TRAFFIC in page and "reporter=source" in page
