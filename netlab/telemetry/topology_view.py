"""`netlab graph LAB --topology`: the lab as built, drawn with the Kiali view's renderer.

Nodes are graphviz clusters holding their pods; each pod is coloured by the mesh mode
that enrolled it (ambient, sidecar, waypoint, none), each node shows its ztunnel when
it runs one, Services point at their endpoint pods, and the fabric joins the nodes
(with the lab's Prometheus when it has one). Read from the lab's record (its plan at
`up` plus the processes it started), so it draws what exists, not what a file says.
"""

from __future__ import annotations

from typing import Any

from netlab import mesh
from netlab.kernel.ownership import LabRecord
from netlab.telemetry.kiali.render import dot_svg, render_html

MODE_COLOURS = {"ambient": "#3e8635", "sidecar": "#0066cc", "waypoint": "#ec7a08", "": "#8a8d90"}
MODE_NAMES = {"ambient": "ambient", "sidecar": "sidecar", "waypoint": "waypoint", "": "no mesh"}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def pod_mode(pod: dict[str, Any]) -> str:
    """The pod's mesh mode; a waypoint by Kiali's own rule (its pod label) if the record predates modes."""
    if pod.get("labels", {}).get(mesh.GATEWAY_MANAGED_LABEL) == mesh.WAYPOINT_MANAGED_VALUE:
        return "waypoint"
    return pod.get("mode") or ""


def to_dot(record: LabRecord) -> str:
    """The lab as DOT text."""
    s = record.summary
    procs = {p.name for p in record.processes}
    lines = ["digraph topology {", '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, compound=true];',
             '  node [fontname="Helvetica", fontsize=10, style=filled, fillcolor="#ffffff"];',
             '  edge [fontname="Helvetica", fontsize=9, color="#6a6e73"];',
             f"  label={_q('lab ' + record.lab)}; labelloc=t;",
             '  fabric [label="fabric (bridge)", shape=box, fillcolor="#f0f0f0"];']
    if "prometheus" in procs:
        lines.append('  prometheus [label="prometheus", shape=cylinder, fillcolor="#fde8d7"];')
        lines.append("  fabric -> prometheus [dir=none];")
    for i, node in enumerate(s.get("nodes", [])):
        name = node["name"]
        title = f"node {name}  {node['ip']}  {node['podCIDR']}"
        lines.append(f"  subgraph cluster_{i} {{ label={_q(title)}; "
                     'style=rounded; color="#2b9af3";')
        lines.append(f"    {_q('node/' + name)} [label={_q(name)}, shape=box3d];")
        if f"ztunnel/{name}" in procs:
            lines.append(f"    {_q('ztunnel/' + name)} [label=\"ztunnel\", shape=hexagon, "
                         f"fillcolor=\"#d1f1bb\"];")
        for p in s.get("pods", []):
            if p["node"] != name:
                continue
            mode = pod_mode(p)
            shape = "diamond" if mode == "waypoint" else "ellipse"
            label = f"{p['namespace']}/{p['name']}\n{p['ip']}  ({MODE_NAMES.get(mode, mode)})"
            lines.append(f"    {_q('pod/' + p['namespace'] + '/' + p['name'])} [label={_q(label)}, "
                         f"shape={shape}, color={_q(MODE_COLOURS.get(mode, '#151515'))}, penwidth=2];")
            lines.append(f"    {_q('node/' + name)} -> {_q('pod/' + p['namespace'] + '/' + p['name'])} "
                         "[dir=none, style=dotted];")
        lines.append("  }")
        lines.append(f"  fabric -> {_q('node/' + name)} [dir=none, label={_q('eth0')}];")
    for svc in s.get("services", []):
        sid = "svc/" + svc["namespace"] + "/" + svc["name"]
        svc_label = f"{svc['namespace']}/{svc['name']}\n{svc['clusterIP']}"
        lines.append(f"  {_q(sid)} [label={_q(svc_label)}, "
                     'shape=triangle, fillcolor="#e7f1fa"];')
        seen = set()
        for port in svc.get("ports", []):
            for ep in port.get("endpoints", []):
                if ep["pod"] in seen:
                    continue
                seen.add(ep["pod"])
                lines.append(f"  {_q(sid)} -> {_q('pod/' + ep['pod'])} [style=dashed, label={_q(str(port['port']))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(record: LabRecord, fmt: str) -> str:
    """The topology as DOT (`json` is the record's own summary), SVG or an HTML page."""
    if fmt == "json":
        import json

        return json.dumps(record.summary, indent=1) + "\n"
    svg = dot_svg(to_dot(record))
    if fmt == "svg":
        return svg
    return render_html([(f"lab {record.lab}", svg, "")], title=f"netlab topology: {record.lab}")
