"""Reports of a lab run: a rich summary table, Markdown, and one self-contained HTML page.

Two questions are kept apart on purpose, because a lab that reproduces a bug is a
success for the lab and a failure for the user:
- the *outcome* (works, fixed, reproduced, broken, …) is coloured by what it means for
  the user: green when they are better off, red when not;
- *as expected* says, in neutral words, whether the evidence showed the outcome the
  variant must show. Nothing prints a bare PASS.

The HTML page has no external assets (inline CSS and SVG) so it can be mailed or
attached to an issue as one file. Nothing is cut short: every check's "seen", every
line of a section, the whole explain text.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

from markdown_it import MarkdownIt  # rich's own Markdown parser
from rich.table import Table
from rich.text import Text as RichText

from netlab.labs.framework import Lab, Observed, Outcome, VariantResult
from netlab.labs.sections import Figure, Section, Sequence as SequenceSection, Text
from netlab.labs.svg import sequence_svg

AS_EXPECTED = ("✔ as expected", "✘ not as expected")


def tone(good: bool | None) -> str:
    """good | bad | unknown: what an outcome means for the user, as a CSS class name."""
    return "unknown" if good is None else ("good" if good else "bad")


_RICH = {"good": "bold green", "bad": "bold red", "unknown": "bold yellow"}
_DOT = {"good": "🟢", "bad": "🔴", "unknown": "🟡"}


def as_expected(r: VariantResult) -> str:
    return AS_EXPECTED[0] if r.ok else AS_EXPECTED[1]


def checks(r: VariantResult) -> str:
    return f"{sum(v.held for v in r.verdicts)}/{len(r.verdicts)}"


def outcome_text(o: Outcome | Observed, with_meaning: bool = True) -> RichText:
    """The outcome word in its user colour, then its meaning in plain text."""
    t = RichText(o.word, style=_RICH[tone(o.good)])
    if with_meaning and o.meaning:
        t.append(f": {o.meaning}")
    return t


def summary_table(results: Sequence[VariantResult]) -> Table:
    t = Table()
    t.add_column("variant", no_wrap=True)  # a name is never cut: the outcomes wrap instead
    t.add_column("expected outcome", overflow="fold", ratio=3)
    t.add_column("observed outcome", overflow="fold", ratio=1)
    for name in ("as expected", "checks", "seconds"):
        t.add_column(name, no_wrap=True)
    for r in results:
        obs = r.observed
        t.add_row(r.variant, outcome_text(r.expected),
                  outcome_text(obs, with_meaning=False),  # what differed: printed per variant
                  as_expected(r), checks(r), f"{r.seconds:.1f}")
    return t


def _shared(r: VariantResult) -> str:
    """", shared with X": the variants judged on the same instance (and the same seconds)."""
    return f", shared with {', '.join(r.shared_with)}" if r.shared_with else ""


def headline(lab: Lab, results: Sequence[VariantResult]) -> str:
    return (f"Lab `{lab.name}`: {sum(r.ok for r in results)} of {len(results)} variants "
            "showed the outcome they must show.")


# -- Markdown ---------------------------------------------------------------------------


def _demote(markdown: str) -> str:
    """One heading level down (outside code blocks), to sit under the report's headings."""
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if not fenced and re.match(r"#+ ", line) else line)
    return "\n".join(out)


def _md_outcome(o: Outcome | Observed) -> str:
    return f"{_DOT[tone(o.good)]} **{o.word}**: {o.meaning}" if o.meaning else \
        f"{_DOT[tone(o.good)]} **{o.word}**"


def _md_section(s: Section) -> list[str]:
    head = [f"**{s.title}**", ""] + ([s.note, ""] if s.note else [])
    if isinstance(s, Figure):  # the pictures are in report.html; their text form here
        names = ", ".join(h for h, _ in s.panels)
        return head + [f"*Pictures side by side in report.html: {names}.*", "",
                       "```", *(s.lines or ("(no text form)",)), "```", ""]
    if isinstance(s, Text):
        body = [] if s.lines else ["(none)"]
        for line in s.lines:
            note = s.marked(line)
            body.append(f"{line}   ◀ {note}" if note else line)
        return head + ["```", *body, "```", ""]
    return head + ["```", *[step.text() for step in s.steps], "```", ""]


def markdown(lab: Lab, results: Sequence[VariantResult]) -> str:
    lines = [f"# {lab.title}", "", headline(lab, results), "",
             "Outcome colours say what the outcome means for the user (🟢 better off, 🔴 not, "
             "🟡 the evidence did not show the expected outcome); *as expected* says whether "
             "the evidence showed the outcome the variant must show.", "",
             "| variant | expected outcome | observed outcome | as expected | checks | seconds |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.variant} | {_DOT[tone(r.expected.good)]} {r.expected.word} | "
                     f"{_DOT[tone(r.observed.good)]} {r.observed.word} | {as_expected(r)} | "
                     f"{checks(r)} | {r.seconds:.1f} |")
    for r in results:
        lines += ["", f"## {r.variant}", "", r.summary, "",
                  f"- expected outcome: {_md_outcome(r.expected)}",
                  f"- observed outcome: {_md_outcome(r.observed)}",
                  f"- {as_expected(r)} ({checks(r)} checks held, {r.seconds:.1f} s, "
                  f"instance `{r.instance}`{_shared(r)})", ""]
        if r.error:
            lines += ["```", r.error, "```", ""]
        for v in r.verdicts:
            lines.append(f"- {'✔' if v.held else '✘'} **{v.id}**: expected {v.expected}  \n"
                         f"  seen: {v.seen}")
        lines.append("")
        for s in lab.sections(r):
            lines += _md_section(s)
    lines += ["", "## About this lab", "", _demote(lab.explain())]
    return "\n".join(lines).rstrip() + "\n"


# -- HTML -------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1f24;background:#fff;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;padding-top:10px;border-top:2px solid #d0d7de}
h3{font-size:15px;margin:16px 0 4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d0d7de;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f6f8fa}pre{background:#f6f8fa;border:1px solid #d0d7de;padding:8px;white-space:pre-wrap;word-break:break-all;font-size:12px}
ul.v{list-style:none;padding-left:0}ul.v li{margin:4px 0}.seen{color:#57606a;font-size:13px;display:block;margin-left:22px;white-space:pre-wrap}
.outcome{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:700}
.good{background:#dafbe1;color:#116329}.bad{background:#ffebe9;color:#a40e26}.unknown{background:#fff8c5;color:#7d4e00}
.neutral{color:#1b1f24}.held{color:#57606a}.note{color:#57606a;font-size:13px}
mark{background:#fff8c5;font-weight:700}.mark-note{color:#9a6700;font-weight:400}
.explain{border-top:2px solid #d0d7de;margin-top:28px}
.side{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}.side>div{flex:1 1 0;min-width:320px;border:1px solid #d0d7de;padding:4px 8px}
.side h4{margin:4px 0}.side svg{max-width:100%;height:auto}
"""


def _esc(s: Any) -> str:
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def _html_outcome(o: Outcome | Observed, with_meaning: bool = True) -> str:
    meaning = f" {_esc(o.meaning)}" if with_meaning and o.meaning else ""
    return f"<span class='outcome {tone(o.good)}'>{_esc(o.word)}</span>{meaning}"


def _html_section(s: Section) -> str:
    note = f"<p class='note'>{_esc(s.note)}</p>" if s.note else ""
    if isinstance(s, SequenceSection):
        return f"<h3>{_esc(s.title)}</h3>{note}{sequence_svg(s)}"
    if isinstance(s, Figure):
        style = f"<style>{s.css}</style>" if s.css else ""
        pics = "".join(f"<div><h4>{_esc(h)}</h4>{markup}</div>" for h, markup in s.panels)
        text = (f"<details><summary>as text</summary><pre>{_esc(chr(10).join(s.lines))}</pre></details>"
                if s.lines else "")
        return f"<h3>{_esc(s.title)}</h3>{note}{style}<div class='side'>{pics}</div>{text}"
    lines = [] if s.lines else ["(none)"]
    for line in s.lines:
        mark = s.marked(line)
        lines.append(f"<mark>{_esc(line)}</mark>  <span class='mark-note'>◀ {_esc(mark)}</span>"
                     if mark else _esc(line))
    return f"<h3>{_esc(s.title)}</h3>{note}<pre>{chr(10).join(lines)}</pre>"


def html(lab: Lab, results: Sequence[VariantResult]) -> str:
    rows = "".join(
        f"<tr><td><a href='#{_esc(r.variant)}'>{_esc(r.variant)}</a></td>"
        f"<td>{_html_outcome(r.expected)}</td><td>{_html_outcome(r.observed, False)}</td>"
        f"<td class='neutral'>{as_expected(r)}</td><td>{checks(r)}</td>"
        f"<td>{r.seconds:.1f}s</td></tr>"
        for r in results)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(lab.title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{_esc(lab.title)}</h1>"
             f"<p>{_esc(headline(lab, results)).replace('`', '')} Every outcome is judged on "
             "observed evidence. Colours say what an outcome means for the user; "
             "<i>as expected</i> says whether the evidence showed the outcome the variant "
             "must show. <a href='#about'>About this lab</a>.</p>"
             "<table><tr><th>variant</th><th>expected outcome</th><th>observed outcome</th>"
             f"<th>as expected</th><th>checks</th><th>time</th></tr>{rows}</table>"]
    for r in results:
        verdicts = "".join(
            f"<li><span class='neutral'>{'✔' if v.held else '✘'}</span> "
            f"<b>{_esc(v.id)}</b>: expected {_esc(v.expected)}"
            f"<span class='seen'>seen: {_esc(v.seen)}</span></li>"
            for v in r.verdicts)
        parts.append(
            f"<h2 id='{_esc(r.variant)}'>{_esc(r.variant)}</h2><p>{_esc(r.summary)}</p>"
            f"<table><tr><th>expected outcome</th><td>{_html_outcome(r.expected)}</td></tr>"
            f"<tr><th>observed outcome</th><td>{_html_outcome(r.observed)}</td></tr>"
            f"<tr><th>as expected</th><td class='neutral'>{as_expected(r)} ({checks(r)} checks "
            f"held; {r.seconds:.1f} s; instance <code>{_esc(r.instance)}</code>{_esc(_shared(r))})</td></tr></table>"
            + (f"<pre>{_esc(r.error)}</pre>" if r.error else "")
            + f"<ul class='v'>{verdicts}</ul>"
            + "".join(_html_section(s) for s in lab.sections(r)))
    explain = MarkdownIt("commonmark", {"html": False}).render(_demote(lab.explain()))
    parts.append(f"<div class='explain' id='about'><h2>About this lab</h2>{explain}</div>"
                 "</body></html>")
    return "".join(parts)


# -- files ------------------------------------------------------------------------------


def results_json(lab: Lab, results: Sequence[VariantResult]) -> dict[str, Any]:
    """The `--json` and results.json shape: docs/labs.md documents it."""
    return {"lab": lab.name, "ok": bool(results) and all(r.ok for r in results),
            "results": [r.to_dict() for r in results]}


def write(directory: str, lab: Lab, results: Sequence[VariantResult]) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, n) for n in ("report.md", "report.html", "results.json")]
    with open(paths[0], "w") as f:
        f.write(markdown(lab, results))
    with open(paths[1], "w") as f:
        f.write(html(lab, results))
    with open(paths[2], "w") as f:
        json.dump(results_json(lab, results), f, indent=1)
    return paths
