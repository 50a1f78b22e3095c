"""Pictures of a Kiali graph and of its edge panel, for terminals-less readers.

The graph is laid out by graphviz's `dot` (Debian package `graphviz`): Kiali's own
layout engine (cytoscape.js in a browser) is out of reach, and the reports need
only nodes, edges, rates and the lock. The lock is drawn as a small SVG padlock
next to the edge label rather than the 🔒 character, so that it shows without an
emoji font (headless Chromium on a bare Debian has none).

Sparklines are inline SVG polylines, one per panel series, or Kiali's
"Not enough traffic to generate chart" when the chart would be empty.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Iterable
from typing import Any

from netlab.telemetry.kiali.graph import shows_lock
from netlab.telemetry.kiali.panel import NOT_ENOUGH_TRAFFIC, PanelSeries

UNITS = {"tcp": "B/s", "http": "rps", "grpc": "rps"}
_SHAPES = {"workload": "ellipse", "service": "triangle", "app": "box", "unknown": "octagon"}


class RenderError(RuntimeError):
    """dot is missing or failed; the message says which and how to fix it."""


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def edge_label(data: dict[str, Any]) -> str:
    """The rate an edge carries, as the graph's edge label shows it."""
    traffic = data.get("traffic", {})
    protocol = traffic.get("protocol", "")
    rate = (traffic.get("rates") or {}).get(protocol)
    return f"{rate} {UNITS.get(protocol, '')}".strip() if rate else ""


def node_label(data: dict[str, Any]) -> str:
    name = data.get("workload") or data.get("service") or data.get("app") or data["nodeType"]
    tag = " (waypoint)" if data.get("isWaypoint") else ""
    return f"{name}{tag}\n{data['namespace']}"


def to_dot(graph: dict[str, Any], show_security: bool, title: str | None = None) -> str:
    """The graph in DOT, namespaces as clusters; locked edges carry class "mtls"."""
    lines = ["digraph kiali {", '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, nodesep=0.5];',
             '  node [fontname="Helvetica", fontsize=10, style=filled, fillcolor="#ffffff", color="#2b9af3"];',
             '  edge [fontname="Helvetica", fontsize=9, color="#3e8635", fontcolor="#151515"];']
    if title:
        lines.append(f"  label={_q(title)}; labelloc=t;")
    by_ns: dict[str, list[dict[str, Any]]] = {}
    for n in graph["elements"]["nodes"]:
        by_ns.setdefault(n["data"]["namespace"], []).append(n["data"])
    for i, (ns, nodes) in enumerate(sorted(by_ns.items())):
        lines.append(f"  subgraph cluster_{i} {{ label={_q(ns)}; style=dashed; color=\"#8a8d90\";")
        for d in nodes:
            shape = "diamond" if d.get("isWaypoint") else _SHAPES.get(d["nodeType"], "ellipse")
            lines.append(f"    {_q(d['id'])} [label={_q(node_label(d))}, shape={shape}, id={_q('n_' + d['id'])}];")
        lines.append("  }")
    for e in graph["elements"]["edges"]:
        d = e["data"]
        attrs = [f"label={_q(edge_label(d))}", f"id={_q('e_' + d['id'])}"]
        if shows_lock(d, show_security):
            attrs.append('class="mtls"')
        if d.get("waypoint"):
            attrs.append("style=dashed")
        lines.append(f"  {_q(d['source'])} -> {_q(d['target'])} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _padlock(x: float, y: float) -> str:
    """A 9×11 px padlock whose bottom-left corner sits at (x, y)."""
    return (f'<g class="lock" transform="translate({x:.1f},{y - 11:.1f})"><title>mTLS</title>'
            '<path d="M2,5 V3 a2.5,2.5 0 0 1 5,0 V5" fill="none" stroke="#151515" stroke-width="1.2"/>'
            '<rect x="0" y="5" width="9" height="6" rx="1" fill="#151515"/></g>')


def add_padlocks(svg: str) -> str:
    """Put a padlock left of the label of every edge dot marked class "mtls"."""
    def one(m: re.Match[str]) -> str:
        group = m.group(0)
        t = re.search(r'<text [^>]*x="([-\d.]+)" y="([-\d.]+)"[^>]*>([^<]*)</text>', group)
        if not t:
            return group
        x, y, text = float(t.group(1)), float(t.group(2)), html.unescape(t.group(3))
        left = x - len(text) * 2.6 - 12  # ≈ half the 9 pt label's width, then a gap
        return group.replace("</g>", _padlock(left, y) + "</g>", 1) if group.endswith("</g>") else group
    return re.sub(r'<g id="e_[0-9a-f]+" class="edge mtls">.*?</g>', one, svg, flags=re.S)


def dot_svg(source: str, dot: str = "dot") -> str:
    """Any DOT text laid out by graphviz's `dot` as SVG (shared with the topology picture)."""
    binary = shutil.which(dot)
    if binary is None:
        raise RenderError("graphviz's dot is not installed: run scripts/setup.sh (Debian package graphviz)")
    proc = subprocess.run([binary, "-Tsvg"], input=source, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RenderError(f"dot failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def render_svg(graph: dict[str, Any], show_security: bool, title: str | None = None,
               dot: str = "dot") -> str:
    """The graph as SVG text, laid out by `dot`."""
    return add_padlocks(dot_svg(to_dot(graph, show_security, title), dot))


def sparkline_svg(points: list[tuple[float, float]], width: int = 160, height: int = 32) -> str:
    """A small line chart of (ts, value) points, or Kiali's empty-chart text."""
    if not points:
        return f'<span class="nochart">{NOT_ENOUGH_TRAFFIC}</span>'
    ts = [p[0] for p in points]
    vs = [p[1] for p in points]
    t0, t1 = min(ts), max(ts)
    v0, v1 = min(0.0, min(vs)), max(vs)
    span_t = (t1 - t0) or 1.0
    span_v = (v1 - v0) or 1.0
    # One datapoint is the newest one: drawn at the right end, where "now" is.
    xy = [(((t - t0) / span_t if t1 > t0 else 1.0) * (width - 4) + 2, height - 2 - (v - v0) / span_v * (height - 4))
          for t, v in points]
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    # A dot per datapoint: a chart of one point (a short rate window) still shows.
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#0066cc"/>' for x, y in xy)
    zero = height - 2 - (0 - v0) / span_v * (height - 4)
    return (f'<svg class="sparkline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><line x1="0" y1="{zero:.1f}" x2="{width}" y2="{zero:.1f}" '
            f'stroke="#d2d2d2" stroke-width="1" shape-rendering="crispEdges"/><polyline points="{coords}" fill="none" stroke="#0066cc" '
            f'stroke-width="1.5"/>{dots}<title>last {vs[-1]:.2f}, max {v1:.2f}</title></svg>')


def panel_html(title: str, series: Iterable[PanelSeries]) -> str:
    """An edge panel: each chart with its query, reporter and sparkline."""
    rows = []
    for s in series:
        label = s.query.name + (" (waypoint reverse)" if s.query.reverse else "")
        peak = f" · peak {max(v for _, v in s.points):.1f} B/s" if s.points else ""
        rows.append(f'<div class="chart"><div class="name">{html.escape(label)} '
                    f'<small>reporter={html.escape(s.query.reporter)}{peak}</small></div>'
                    f'{sparkline_svg(s.points)}<code>{html.escape(s.query.promql)}</code></div>')
    return f'<section class="panel"><h3>{html.escape(title)}</h3>{"".join(rows)}</section>'


_CSS = ("body{font-family:Helvetica,Arial,sans-serif;margin:1em}"
        ".side{display:flex;gap:2em;flex-wrap:wrap}.side>div{flex:1;min-width:360px}"
        ".chart{margin:.5em 0}.chart code{display:block;font-size:10px;color:#555;word-break:break-all}"
        ".nochart{color:#6a6e73;font-style:italic}"
        ".side svg:not(.sparkline){max-width:100%;height:auto}")


def _strip_prolog(svg: str) -> str:
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def render_html(views: Iterable[tuple[str, str, str]], title: str = "Kiali view") -> str:
    """A page of (heading, svg, extra html) views side by side, e.g. Kiali 2.0 and
    2.1 of one lab, each graph followed by its panels."""
    cols = "".join(f"<div><h2>{html.escape(h)}</h2>{_strip_prolog(svg)}{extra}</div>" for h, svg, extra in views)
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<div class="side">{cols}</div></body></html>\n')
