"""A sequence diagram as inline SVG: one lane per actor, one arrow (or mark) per step.

Hand-drawn rather than a library so the report stays one self-contained file.
"""

from __future__ import annotations

from typing import Any, Sequence

LANE_W = 190
ROW_H = 34
TOP = 56
LEFT = 20
COLORS = {"packet": "#0969da", "nat": "#8250df", "drop": "#cf222e", "result": "#1a7f37"}


def _esc(s: Any) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def lanes_of(steps: Sequence[dict[str, Any]], preferred: Sequence[str] = ()) -> list[str]:
    """The lanes steps use, in the lab's preferred order, unknown ones after."""
    used = {s["src"] for s in steps} | {s["dst"] for s in steps}
    order = [lane for lane in preferred if lane in used]
    return order + sorted(used - set(order))


def sequence_svg(steps: Sequence[dict[str, Any]], preferred: Sequence[str] = ()) -> str:
    lanes = lanes_of(steps, preferred)
    x = {lane: LEFT + LANE_W // 2 + i * LANE_W for i, lane in enumerate(lanes)}
    width = LEFT * 2 + LANE_W * max(len(lanes), 1)
    height = TOP + ROW_H * (len(steps) + 1)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}' font-family='system-ui,sans-serif' font-size='11'>",
           "<defs><marker id='ah' markerWidth='8' markerHeight='8' refX='7' refY='4' "
           "orient='auto'><path d='M0,0 L8,4 L0,8 z' fill='context-stroke'/></marker></defs>"]
    for lane, cx in x.items():
        out.append(f"<rect x='{cx - 80}' y='8' width='160' height='28' rx='6' fill='#f6f8fa' "
                   f"stroke='#57606a'/><text x='{cx}' y='27' text-anchor='middle' "
                   f"font-weight='600' font-size='12'>{_esc(lane)}</text>"
                   f"<line x1='{cx}' y1='36' x2='{cx}' y2='{height - 6}' stroke='#afb8c1' "
                   "stroke-dasharray='4 4'/>")
    for i, s in enumerate(steps):
        y = TOP + ROW_H * i + 14
        color = COLORS.get(s["kind"], "#0969da")
        label = s["label"] + (f" (×{s['count']})" if s.get("count", 1) > 1 else "")
        x1, x2 = x[s["src"]], x[s["dst"]]
        if x1 == x2:
            anchor = "start" if x1 < width - 260 else "end"
            tx = x1 + 12 if anchor == "start" else x1 - 12
            out.append(f"<circle cx='{x1}' cy='{y}' r='6' fill='{color}'/>"
                       f"<text x='{tx}' y='{y + 4}' text-anchor='{anchor}' fill='{color}'>"
                       f"{_esc(label)}</text>")
        else:
            out.append(f"<line x1='{x1}' y1='{y}' x2='{x2}' y2='{y}' stroke='{color}' "
                       f"stroke-width='2' marker-end='url(#ah)'/>"
                       f"<text x='{(x1 + x2) / 2}' y='{y - 5}' text-anchor='middle' "
                       f"fill='#24292f'>{_esc(label)}</text>")
    out.append("</svg>")
    return "".join(out)
