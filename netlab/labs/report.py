"""Reports of a lab run: a rich summary table, Markdown, and one self-contained HTML page.

The HTML page has no external assets (inline CSS and SVG) so it can be mailed or
attached to an issue as one file. Everything shown is the evidence the verdicts were
judged on: the client's result, the flow as a sequence diagram, the iptables lines and
conntrack entries that matter, and the kernel's counters.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from rich.table import Table

from netlab.labs.framework import Lab, VariantResult
from netlab.labs.svg import sequence_svg


def summary_table(results: Sequence[VariantResult]) -> Table:
    t = Table("variant", "verdict", "stealing", "expectations", "seconds")
    for r in results:
        held = sum(v.held for v in r.verdicts)
        t.add_row(r.variant, "[green]PASS[/]" if r.ok else "[red]FAIL[/]",
                  "works" if r.works else "broken", f"{held}/{len(r.verdicts)}",
                  f"{r.seconds:.1f}")
    return t


def _ct_line(c: dict[str, Any]) -> str:
    r = (c.get("extra") or {}).get("reply") or {}
    return (f"[{c.get('netns')}] {c.get('proto')} {c.get('saddr')}:{c.get('sport')} -> "
            f"{c.get('daddr')}:{c.get('dport')}  reply {r.get('saddr')}:{r.get('sport')} -> "
            f"{r.get('daddr')}:{r.get('dport')}  {','.join((c.get('extra') or {}).get('status', []))}")


def _conntrack(ev: dict[str, Any]) -> list[str]:
    return [_ct_line(c) for c in ev.get("conntrack", [])][:12]


def _iptables(ev: dict[str, Any]) -> list[str]:
    return list((ev.get("iptables") or {}).get("excerpt", []))


def _drops(ev: dict[str, Any]) -> list[str]:
    return [f"[{d.get('netns')}] {d.get('reason')} {d.get('saddr')}:{d.get('sport')} -> "
            f"{d.get('daddr')}:{d.get('dport')} {d.get('tcp_flags') or ''} at "
            f"{(d.get('extra') or {}).get('location', '?')}" for d in ev.get("drops", [])][:12]


def markdown(lab: Lab, results: Sequence[VariantResult]) -> str:
    lines = [f"# {lab.title}", "", f"Lab `{lab.name}`: "
             f"{sum(r.ok for r in results)}/{len(results)} variants as expected.", "",
             "| variant | verdict | stealing | expectations | seconds |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.variant} | {'PASS' if r.ok else 'FAIL'} | "
                     f"{'works' if r.works else 'broken'} | "
                     f"{sum(v.held for v in r.verdicts)}/{len(r.verdicts)} | {r.seconds:.1f} |")
    for r in results:
        ev = r.evidence
        lines += ["", f"## {r.variant}: {'PASS' if r.ok else 'FAIL'}", "", r.summary, ""]
        if r.error:
            lines += ["```", r.error, "```"]
        for v in r.verdicts:
            lines.append(f"- {'✔' if v.held else '✘'} **{v.id}**: expected {v.expected}  \n"
                         f"  seen: {v.seen}")
        for title, body in (("Flow", [f"{s['src']} -> {s['dst']}: {s['label']}"
                                      + (f" (x{s['count']})" if s["count"] > 1 else "")
                                      for s in ev.get("sequence", [])]),
                            ("iptables-save -t nat (target pod)", _iptables(ev)),
                            ("conntrack (new entries)", _conntrack(ev)),
                            ("kernel drops (skb:kfree_skb)", _drops(ev)),
                            ("SNMP counters (target pod, during the request)",
                             [f"{k} +{v}" for k, v in (ev.get("counters") or {}).items() if v])):
            if body:
                lines += ["", f"**{title}**", "", "```", *body, "```"]
    return "\n".join(lines) + "\n"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;padding-top:10px;border-top:2px solid #d0d7de}
.pass{color:#1a7f37;font-weight:700}.fail{color:#cf222e;font-weight:700}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d0d7de;padding:4px 10px;text-align:left}
th{background:#f6f8fa}pre{background:#f6f8fa;border:1px solid #d0d7de;padding:8px;overflow-x:auto;font-size:12px}
ul.v{list-style:none;padding-left:0}ul.v li{margin:4px 0}.seen{color:#57606a;font-size:13px;display:block;margin-left:22px}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;background:#eaeef2}
.broken{background:#ffebe9}.works{background:#dafbe1}
"""


def _esc(s: Any) -> str:
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _pre(title: str, lines: list[str]) -> str:
    return f"<h3>{_esc(title)}</h3><pre>{_esc(chr(10).join(lines))}</pre>" if lines else ""


def html(lab: Lab, results: Sequence[VariantResult]) -> str:
    rows = "".join(
        f"<tr><td><a href='#{_esc(r.variant)}'>{_esc(r.variant)}</a></td>"
        f"<td class='{'pass' if r.ok else 'fail'}'>{'PASS' if r.ok else 'FAIL'}</td>"
        f"<td><span class='tag {'works' if r.works else 'broken'}'>"
        f"{'stealing works' if r.works else 'stealing broken'}</span></td>"
        f"<td>{sum(v.held for v in r.verdicts)}/{len(r.verdicts)}</td><td>{r.seconds:.1f}s</td></tr>"
        for r in results)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(lab.title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{_esc(lab.title)}</h1>"
             f"<p>Lab <code>{_esc(lab.name)}</code>: {sum(r.ok for r in results)}/{len(results)} "
             "variants behaved as expected. Every verdict is judged on observed evidence: the "
             "client's result, kernel events, iptables-save and sysctls read back.</p>"
             "<table><tr><th>variant</th><th>verdict</th><th>outcome</th><th>expectations</th>"
             f"<th>time</th></tr>{rows}</table>"]
    for r in results:
        ev = r.evidence
        verdicts = "".join(
            f"<li><span class='{'pass' if v.held else 'fail'}'>{'✔' if v.held else '✘'}</span> "
            f"<b>{_esc(v.id)}</b>: {_esc(v.expected)}<span class='seen'>seen: {_esc(v.seen)}</span></li>"
            for v in r.verdicts)
        client = ev.get("client") or {}
        parts.append(
            f"<h2 id='{_esc(r.variant)}'>{_esc(r.variant)} "
            f"<span class='{'pass' if r.ok else 'fail'}'>{'PASS' if r.ok else 'FAIL'}</span></h2>"
            f"<p>{_esc(r.summary)}</p>"
            + (f"<pre>{_esc(r.error)}</pre>" if r.error else "")
            + f"<ul class='v'>{verdicts}</ul>"
            + (f"<p><b>Client</b> <code>{_esc(' '.join(client.get('argv', [])))}</code> → exit "
               f"{_esc(client.get('exit_code'))}</p>" if client else "")
            + (sequence_svg(ev.get("sequence", []), ev.get("lanes", ())) if ev.get("sequence") else "")
            + _pre("iptables-save -t nat (target pod, while the agent runs)", _iptables(ev))
            + _pre("conntrack: new entries", _conntrack(ev))
            + _pre("kernel drops (skb:kfree_skb)", _drops(ev))
            + _pre("SNMP counters in the target pod during the request",
                   [f"{k} +{v}" for k, v in (ev.get("counters") or {}).items() if v]))
    parts.append("</body></html>")
    return "".join(parts)


def write(directory: str, lab: Lab, results: Sequence[VariantResult]) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, n) for n in ("report.md", "report.html", "results.json")]
    with open(paths[0], "w") as f:
        f.write(markdown(lab, results))
    with open(paths[1], "w") as f:
        f.write(html(lab, results))
    with open(paths[2], "w") as f:
        json.dump({"lab": lab.name, "results": [r.to_dict() for r in results]}, f, indent=1)
    return paths
