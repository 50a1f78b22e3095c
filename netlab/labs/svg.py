"""A sequence diagram as inline SVG: one lane per actor, one arrow (or mark) per step.

Hand-drawn rather than a library so the report stays one self-contained file. Labels
are never cut: a long label wraps onto more lines and its row grows.
"""

from __future__ import annotations

import textwrap

from netlab.labs.sections import Sequence

LANE_W = 200
LINE_H = 14
ROW_PAD = 20
TOP = 56
LEFT = 20
COLORS = {"packet": "#0969da", "nat": "#8250df", "drop": "#cf222e", "result": "#57606a"}


def _esc(s: object) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _lines(label: str, width_px: int) -> list[str]:
    return textwrap.wrap(label, max(12, width_px // 6)) or [""]


def sequence_svg(seq: Sequence) -> str:
    used = {s.src for s in seq.steps} | {s.dst for s in seq.steps}
    lanes = [lane for lane in seq.lanes if lane in used] + sorted(used - set(seq.lanes))
    x = {lane: LEFT + LANE_W // 2 + i * LANE_W for i, lane in enumerate(lanes)}
    width = LEFT * 2 + LANE_W * max(len(lanes), 1)
    rows = []
    for s in seq.steps:
        label = s.label + (f" (×{s.count})" if s.count > 1 else "")
        span = abs(x[s.src] - x[s.dst]) or (width - x[s.src] - 30 if x[s.src] < width - 260
                                             else x[s.src] - 30)
        rows.append((s, _lines(label, max(span, 150))))
    height = TOP + sum(ROW_PAD + LINE_H * len(ls) for _, ls in rows) + 20
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}' font-family='system-ui,sans-serif' font-size='11'>",
           "<defs><marker id='ah' markerWidth='8' markerHeight='8' refX='7' refY='4' "
           "orient='auto'><path d='M0,0 L8,4 L0,8 z' fill='context-stroke'/></marker></defs>"]
    for lane, cx in x.items():
        out.append(f"<rect x='{cx - 90}' y='8' width='180' height='28' rx='6' fill='#f6f8fa' "
                   f"stroke='#57606a'/><text x='{cx}' y='27' text-anchor='middle' "
                   f"font-weight='600' font-size='12'>{_esc(lane)}</text>"
                   f"<line x1='{cx}' y1='36' x2='{cx}' y2='{height - 6}' stroke='#afb8c1' "
                   "stroke-dasharray='4 4'/>")
    y = TOP
    for s, lines in rows:
        color = COLORS.get(s.kind, COLORS["packet"])
        x1, x2 = x[s.src], x[s.dst]
        text_h = LINE_H * len(lines)
        arrow_y = y + text_h + 4
        if x1 == x2:
            anchor = "start" if x1 < width - 260 else "end"
            tx = x1 + 12 if anchor == "start" else x1 - 12
            out.append(f"<circle cx='{x1}' cy='{arrow_y - 4}' r='6' fill='{color}'/>")
            out += [f"<text x='{tx}' y='{y + 10 + i * LINE_H}' text-anchor='{anchor}' "
                    f"fill='{color}'>{_esc(line)}</text>" for i, line in enumerate(lines)]
        else:
            out.append(f"<line x1='{x1}' y1='{arrow_y}' x2='{x2}' y2='{arrow_y}' "
                       f"stroke='{color}' stroke-width='2' marker-end='url(#ah)'/>")
            out += [f"<text x='{(x1 + x2) / 2}' y='{y + 10 + i * LINE_H}' text-anchor='middle' "
                    f"fill='#24292f'>{_esc(line)}</text>" for i, line in enumerate(lines)]
        y += ROW_PAD + text_h
    out.append("</svg>")
    return "".join(out)
