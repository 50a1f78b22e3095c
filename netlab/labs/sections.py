"""Report sections a lab adds to its variants' pages: text, sequence diagrams, figures.

A lab returns these from evidence (`Lab.sections`); the report renders them into
Markdown and HTML alike, so a lab never writes markup and every report looks the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Text:
    """Lines shown as they are (a rule dump, conntrack entries, counters).

    `highlight` maps a substring to a note: every line containing it is marked, with the
    note beside it, e.g. the rule that decides the story in an iptables dump.
    """

    title: str
    lines: tuple[str, ...]
    highlight: dict[str, str] = field(default_factory=dict)
    note: str = ""  # one sentence under the title: what to look at

    def marked(self, line: str) -> str | None:
        """The note for `line` when it holds a highlighted substring, else None."""
        return next((n for s, n in self.highlight.items() if s in line), None)


@dataclass(frozen=True)
class Step:
    """One arrow (src != dst) or one mark on a lane (src == dst) of a sequence diagram."""

    src: str
    dst: str
    label: str
    kind: str = "packet"  # packet | nat | drop | result: picks the colour
    count: int = 1  # identical consecutive steps (retransmissions) collapse into one

    def text(self) -> str:
        arrow = f"{self.src} -> {self.dst}" if self.src != self.dst else f"[{self.src}]"
        return f"{arrow}: {self.label}" + (f" (x{self.count})" if self.count > 1 else "")


@dataclass(frozen=True)
class Sequence:
    """A sequence diagram: `lanes` in order, left to right; `steps` top to bottom."""

    title: str
    lanes: tuple[str, ...]
    steps: tuple[Step, ...]
    note: str = ""


@dataclass(frozen=True)
class Figure:
    """Pictures side by side, each under its heading: an old and a new version's graph of
    the same run, or an edge panel's charts before and after a fix.

    `panels` are (heading, markup) pairs of SVG or HTML made by netlab's own renderers
    (e.g. netlab/telemetry/kiali/render.py, which escapes every name it draws); the HTML
    report embeds them as they are. `lines` say the same in text: the Markdown report
    shows them in place of the pictures, the HTML report under them. `css` holds the
    styles the markup needs (a lab's own class names), put beside it.
    """

    title: str
    panels: tuple[tuple[str, str], ...]
    lines: tuple[str, ...] = ()
    note: str = ""
    css: str = ""


Section = Union[Text, Sequence, Figure]


def collapse(steps: list[Step]) -> list[Step]:
    """Merge identical consecutive steps into one with a count (a SYN sent three times)."""
    out: list[Step] = []
    for s in steps:
        last = out[-1] if out else None
        if last and (last.src, last.dst, last.label, last.kind) == (s.src, s.dst, s.label, s.kind):
            out[-1] = Step(last.src, last.dst, last.label, last.kind, last.count + s.count)
        else:
            out.append(s)
    return out
