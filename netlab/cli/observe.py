"""`netlab trace` and `netlab doctor`: render what observe/ collects.

Output contract (docs/events.md, "`netlab trace` output"): with --json, stdout carries
only JSON lines (events, then timelines, then stories, then one counters line, then the
key log, then the command's exit code), so the traced command's own output goes to
stderr there.
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from netlab.cli.render import err, out
from netlab.kernel.lifecycle import require_root
from netlab.observe.lab_trace import LabTrace, trace_lab
from netlab.observe.story_text import Line, render_other, render_story

_STYLES = {"head": "bold", "drop": "bold red", "reset": "red", "deny": "bold red",
           "retx": "yellow", "proxy": "cyan", "nat": "magenta", "dim": "dim"}


@click.command("trace", context_settings={"ignore_unknown_options": True})
@click.argument("lab")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--pod", help="Where `-- CMD` runs (ns/name or a unique name); required with CMD.")
@click.option("--port", type=int, help="Only packets/connections with this port (either side).")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines: events, {\"timeline\": ...}, {\"story\": ...}, counters, "
                   "keylog, command.")
@click.option("--pcap", type=click.Path(file_okay=False),
              help="Also write one pcapng per interface of every traced netns here, and the "
                   "proxies' TLS key log (tls-keys.log) to decrypt HBONE.")
@click.option("--duration", type=float, help="Without CMD: stop after this many seconds.")
@click.option("-v", "--verbose", is_flag=True,
              help="Every event of every leg, and every hop of the other flows.")
def trace(lab: str, command: tuple[str, ...], pod: str | None, port: int | None,
          as_json: bool, pcap: str | None, duration: float | None, verbose: bool) -> None:
    """Trace LAB's namespaces: around `-- CMD` run in --pod, or until Ctrl-C/--duration.

    Prints one story per user connection: its DNS lookup, its connection to the proxy,
    the HBONE connection that carried it and the proxy's connection to the app, with
    the proxies' decisions. Exits with CMD's exit code when a command is given."""
    if command and command[0] == "--":
        command = command[1:]
    require_root()
    t = trace_lab(lab, pod=pod, argv=command, port=port, pcap_dir=pcap, duration=duration, say=_say)
    if t.command is not None:
        # The command's output never mixes with JSON lines on stdout.
        target = sys.stderr.buffer if as_json else sys.stdout.buffer
        target.write(t.command.stdout or b"")
        sys.stderr.buffer.write(t.command.stderr or b"")
        target.flush()
        sys.stderr.flush()
    if as_json:
        _print_json_lines(t)
    else:
        _render_text(out(), t, verbose)
    _warn_lost(err(), t.counters)
    if t.command is not None:
        err().print(f"command exited with code {t.command.returncode}", highlight=False)
        sys.exit(t.command.returncode)


def _say(msg: str) -> None:
    err().print(escape(msg), highlight=False)


def _print_json_lines(t: LabTrace) -> None:
    lines = [e.to_json() for e in t.events]
    lines += [json.dumps({"timeline": tl.to_dict()}, sort_keys=True) for tl in t.timelines]
    lines += [json.dumps({"story": s.to_dict()}, sort_keys=True) for s in t.stories]
    lines.append(json.dumps({"counters": t.counters, "skipped": t.skipped}, sort_keys=True))
    if t.keylog:
        lines.append(json.dumps({"keylog": {"file": t.keylog, "tshark": t.tshark or ''}},
                                sort_keys=True))
    if t.command is not None:
        pod = f"{t.pod['namespace']}/{t.pod['name']}" if t.pod else None
        lines.append(json.dumps({"command": {"argv": t.argv, "pod": pod,
                                             "exit_code": t.command.returncode}}, sort_keys=True))
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _print_lines(o: Console, lines: list[Line]) -> None:
    for style, text in lines:
        st = _STYLES.get(style)
        o.print(f"[{st}]{escape(text)}[/]" if st else escape(text), highlight=False,
                soft_wrap=True)


def _render_text(o: Console, t: LabTrace, verbose: bool = False) -> None:
    """Stories (one per user connection), the other flows, the first drop, counters."""
    for s in t.stories:
        o.print()
        _print_lines(o, render_story(s, t.lab, verbose))
    if t.other:
        o.print()
        o.print(f"[bold]other flows ({len(t.other)})[/]", highlight=False)
        for tl in t.other:
            _print_lines(o, render_other(tl, t.lab, verbose))
    drops = [(tl.first_drop["ts_ns"], tl) for tl in t.timelines if tl.first_drop]
    o.print()
    if drops:
        _, tl = min(drops, key=lambda d: d[0])
        d = tl.first_drop or {}
        o.print(f"[bold red]first drop:[/] flow {escape(tl.flow_id)} in "
                f"{escape(str(d.get('netns')))}/{escape(str(d.get('ifname')))}: "
                f"[bold]{escape(str(d.get('reason')))}[/] at {escape(str(d.get('location')))} "
                f"[{escape(str(d.get('tcp_flags') or ''))}]", highlight=False)
    else:
        o.print("no drops seen")
    if t.keylog:
        o.print(f"TLS key log: {escape(t.keylog)}  (HBONE opened during the trace; decode with)",
                highlight=False)
        o.print(f"  {escape(t.tshark or '')}", highlight=False, soft_wrap=True)
    table = Table("collector", "counters", title=f"{len(t.events)} events, "
                  f"{len(t.timelines)} flows, {len(t.stories)} stories")
    for name, c in t.counters.items():
        cells = ", ".join(f"{k}={v}" for k, v in sorted(c.items()))
        table.add_row(name, f"[bold red]{cells}[/]" if c.get("lost") else cells)
    for name, reason in t.skipped.items():
        table.add_row(name, f"[yellow]skipped: {escape(reason)}[/]")
    o.print(table)


def _warn_lost(e: Console, counters: dict[str, dict[str, int]]) -> None:
    lost = {n: c["lost"] for n, c in counters.items() if c.get("lost")}
    if lost:
        e.print("[bold red on yellow] WARNING: EVENTS WERE LOST [/] "
                + ", ".join(f"{n}: {v}" for n, v in lost.items())
                + " -- timelines may miss hops; narrow the trace with --port", highlight=False)


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json: bool) -> None:
    """Can each collector run here, and if not, why; exit 1 unless all is well."""
    from netlab.observe.doctor import doctor as collector_checks
    from netlab.observe.host_checks import host_checks

    rows = [(name, cap.ok, cap.reason) for name, cap in collector_checks()]
    rows += [(c.name, c.ok, c.detail) for c in host_checks()]
    if as_json:
        out().print_json(json.dumps([{"check": n, "ok": ok, "detail": d} for n, ok, d in rows]))
    else:
        t = Table("check", "ok", "what it uses / why not")
        for name, ok, detail in rows:
            t.add_row(name, "[green]ok[/]" if ok else "[bold red]no[/]", escape(detail))
        out().print(t)
    sys.exit(0 if all(ok for _, ok, _ in rows) else 1)


COMMANDS: list[click.Command] = [trace, doctor]
