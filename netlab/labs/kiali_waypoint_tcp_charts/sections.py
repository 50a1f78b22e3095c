"""The report: both versions' edge panels side by side, their graphs, and the series behind them.

Every picture is drawn from the evidence alone (the graphs' JSON, each chart's points),
with netlab's Kiali renderers; the same run fed both versions.
"""

from __future__ import annotations

from typing import Sequence

from netlab.labs import kiali_views as kv
from netlab.labs.framework import VariantResult, dig
from netlab.labs.kiali_waypoint_tcp_charts.traffic import EDGES, FROM_WAYPOINT, VERSIONS
from netlab.labs.sections import Section

HEADINGS = {"1.89": "Kiali 1.89 (before kiali#7784)", "2.0": "Kiali 2.0 (kiali#7784)"}


def sections(result: VariantResult) -> Sequence[Section]:
    ev = result.evidence
    panels = dig(ev, "kiali.panels", {})
    if not panels:
        return ()
    k = ev["kiali"]
    out: list[Section] = []
    views, lines = [], []
    for v in VERSIONS:
        body = [(f"{src} → {dst}", panels[v][key]) for key, src, dst in EDGES]
        views.append((HEADINGS[v], body))
        lines += [kv.chart_text(v, f"{src} -> {dst}", c) for key, src, dst in EDGES for c in panels[v][key]]
    out.append(kv.panel_figure(
        f"Edge panel TCP charts, Kiali {' and '.join(VERSIONS)} side by side", views, lines,
        f"Both panels asked the same Prometheus at the same time, over the last {k['duration']} s "
        f"(step {k['step']} s, rate interval {k['rate_interval']}, scrape interval {k['scrape_interval']} s). "
        f"Look at {FROM_WAYPOINT[1]} → {FROM_WAYPOINT[2]}: 1.89 asks reporter=\"source\" and gets null."))
    graphs = k["graphs"]
    out.append(kv.graph_figure(
        "The graphs the panels belong to",
        [(f"Kiali {v}", graphs[v]) for v in VERSIONS], False,
        [f"Kiali {v}: {kv.edge_text(e)}" for v in VERSIONS for e in k["edges"][v]],
        f"The panels are opened on Kiali {k['graph_version']}'s edges, which carry the waypoint direction "
        "the panel reads. Kiali 1.89's own graph drops every edge leaving a waypoint (its ambient appender), "
        "so it draws no waypoint → ratings-v1 edge to click."))
    queries = {f"{v} {c['name']} of {src}→{dst}": c["promql"]
               for v in VERSIONS for key, src, dst in EDGES for c in panels[v][key] if not c["reverse"]}
    out.append(kv.series_text(
        "TCP byte series in the lab's Prometheus, and which chart query selects each",
        ev.get("series", []), queries,
        "Only the destination ztunnel reports the waypoint → ratings-v1 leg (reporter=\"destination\", "
        "source_workload=\"waypoint\"); the client ztunnel's reporter=\"source\" series ends at the waypoint, "
        "and the waypoint's own series say reporter=\"waypoint\"."))
    return out
