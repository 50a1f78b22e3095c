"""`netlab trace`, `netlab doctor` and `netlab bench trace`: the observation layer's CLI.

Thin, like the rest of the CLI: the Tracer does the work, this module decides scope,
runs the user's command inside a pod while tracing, and renders. Registered onto the
main group by `netlab.cli_extra.register` (no side effects at import time).

Output contract (docs/events.md, "`netlab trace` output"): with --json, stdout carries
only JSON lines (events, then timelines, then one counters line, then the command's
exit code), so the traced command's own output goes to stderr there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from netlab import runtime
from netlab.errors import NetlabError
from netlab.kernel import netns as nsmod
from netlab.observe.events import Event
from netlab.observe.timeline import Timeline, render_text

COLLECTORS = ("bpf", "conntrack", "nftrace")


def _consoles() -> tuple[Console, Console]:
    """(stderr, stdout) consoles, made per call so importing this module does nothing."""
    return Console(stderr=True), Console()


def lab_scope(lab: str) -> dict[str, int]:
    """Every netns the lab owns, name -> inode: events are keyed by inode, never by name."""
    record = runtime.record_of(lab)
    runtime.ensure_lab_netns(record)
    return {name: nsmod.inode(name) for name in record.netns}


def _check_collectors(names: tuple[str, ...]) -> dict[str, str]:
    """Why each collector cannot run; raise if none can (an empty trace proves nothing)."""
    from netlab.observe.registry import create as make_collector

    why: dict[str, str] = {}
    for name in names:
        try:
            cap = make_collector(name).can_run()
        except Exception as e:  # noqa: BLE001 - a broken probe is a reason, not a crash
            why[name] = f"probe failed: {e}"
            continue
        if not cap.ok:
            why[name] = cap.reason
    if len(why) == len(names):
        detail = "; ".join(f"{n}: {r}" for n, r in why.items())
        raise NetlabError(f"no collector can run here ({detail}); `netlab doctor` explains")
    return why


def _render_text(out: Console, err: Console, events: list[Event], timelines: list[Timeline],
                 counters: dict[str, dict[str, int]], skipped: dict[str, str]) -> None:
    """Readable view: timelines (drop lines in red), the lab-wide first drop, counters."""
    for tl in timelines:
        out.print()
        for line in render_text(tl).splitlines():
            if "FIRST DROP" in line:
                out.print(f"[bold red]{escape(line)}[/]", highlight=False, soft_wrap=True)
            elif ":drop" in line:
                out.print(f"[red]{escape(line)}[/]", highlight=False, soft_wrap=True)
            else:
                out.print(escape(line), highlight=False, soft_wrap=True)
    drops = [(tl.first_drop["ts_ns"], tl) for tl in timelines if tl.first_drop]
    out.print()
    if drops:
        _, tl = min(drops, key=lambda d: d[0])
        d = tl.first_drop or {}
        out.print(f"[bold red]first drop:[/] flow {escape(tl.flow_id)} in "
                  f"{escape(str(d.get('netns')))}/{escape(str(d.get('ifname')))}: "
                  f"[bold]{escape(str(d.get('reason')))}[/] at {escape(str(d.get('location')))} "
                  f"[{escape(str(d.get('tcp_flags') or ''))}]", highlight=False)
    else:
        out.print("no drops seen")
    t = Table("collector", "counters", title=f"{len(events)} events, {len(timelines)} timelines")
    for name, c in counters.items():
        cells = ", ".join(f"{k}={v}" for k, v in sorted(c.items()))
        t.add_row(name, f"[bold red]{cells}[/]" if c.get("lost") else cells)
    for name, reason in skipped.items():
        t.add_row(name, f"[yellow]skipped: {escape(reason)}[/]")
    out.print(t)


def _warn_lost(err: Console, counters: dict[str, dict[str, int]]) -> None:
    lost = {n: c["lost"] for n, c in counters.items() if c.get("lost")}
    if lost:
        err.print("[bold red on yellow] WARNING: EVENTS WERE LOST [/] "
                  + ", ".join(f"{n}: {v}" for n, v in lost.items())
                  + " -- timelines may miss hops; narrow the trace with --port", highlight=False)


def _trace(lab: str, pod: str | None, port: int | None, as_json: bool, pcap: str | None,
           duration: float | None, command: tuple[str, ...]) -> int:
    from netlab.kernel.processes import run_in
    from netlab.observe.tracer import Tracer

    err, out = _consoles()
    if command and command[0] == "--":
        command = command[1:]
    runtime.require_root()
    record = runtime.record_of(lab)
    if command and not pod:
        raise NetlabError("--pod is required with a command: netlab trace LAB --pod POD -- CMD")
    if pod and not command:
        raise NetlabError("--pod names where `-- CMD` runs; give a command after --")
    p = runtime.find_pod(record, pod) if pod else None
    scope = lab_scope(lab)
    skipped = _check_collectors(COLLECTORS)
    for name, reason in skipped.items():
        err.print(f"[yellow]collector {name} skipped:[/] {escape(reason)}", highlight=False)
    result: subprocess.CompletedProcess[bytes] | None = None
    tracer = Tracer(scope, port=port, collectors=COLLECTORS, pcap_dir=pcap, strict=False)
    with tracer:
        if p is not None:
            err.print(f"tracing {len(scope)} netns of {lab}"
                      f"{f' (port {port})' if port else ''} while running "
                      f"{' '.join(command)!r} in {p['namespace']}/{p['name']}", highlight=False)
            try:
                result = run_in(p["netns"], list(command), runtime.pod_resolv_conf(record, p),
                                capture_output=True)
            except FileNotFoundError:
                raise NetlabError(f"command not found: {command[0]}") from None
            tracer.drain()
        else:
            err.print(f"tracing {len(scope)} netns of {lab}"
                      f"{f' (port {port})' if port else ''}; "
                      + (f"for {duration:g}s" if duration else "Ctrl-C to stop"), highlight=False)
            try:
                threading.Event().wait(duration)  # None: until Ctrl-C
            except KeyboardInterrupt:
                err.print("stopping")
            tracer.drain()
    events, timelines = tracer.events, tracer.timelines()
    counters, skipped = tracer.counters, {**skipped, **tracer.skipped}
    if result is not None:
        # The command's output never mixes with JSON lines on stdout.
        target = sys.stderr.buffer if as_json else sys.stdout.buffer
        target.write(result.stdout or b"")
        sys.stderr.buffer.write(result.stderr or b"")
        target.flush()
        sys.stderr.flush()
    if as_json:
        lines = [e.to_json() for e in events]
        lines += [json.dumps({"timeline": tl.to_dict()}, sort_keys=True) for tl in timelines]
        lines.append(json.dumps({"counters": counters, "skipped": skipped}, sort_keys=True))
        if result is not None:
            lines.append(json.dumps({"command": {"argv": list(command), "pod":
                                     f"{p['namespace']}/{p['name']}" if p else None,
                                     "exit_code": result.returncode}}, sort_keys=True))
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    else:
        _render_text(out, err, events, timelines, counters, skipped)
    _warn_lost(err, counters)
    if result is not None:
        err.print(f"command exited with code {result.returncode}", highlight=False)
        return result.returncode
    return 0


def _doctor_rows() -> list[tuple[str, bool, str]]:
    """Collectors (what they will use, or why not) plus the host facts behind them."""
    from netlab.observe.doctor import doctor

    rows = [(name, cap.ok, cap.reason) for name, cap in doctor()]
    root = os.geteuid() == 0
    rows.append(("root", root, "euid 0" if root else f"euid {os.geteuid()}: run with sudo"))
    try:
        import bcc
        rows.append(("bcc import", True, os.path.dirname(bcc.__file__)))
    except Exception as e:  # noqa: BLE001 - any import failure is the answer
        rows.append(("bcc import", False, f"{e}: install python3-bpfcc, venv with "
                     "--system-site-packages"))
    build = f"/lib/modules/{os.uname().release}/build"
    ok = os.path.isdir(os.path.join(build, "include"))
    rows.append(("kernel headers", ok, f"{build} -> {os.path.realpath(build)}" if ok
                 else f"{build}/include missing: install linux-headers"))
    from netlab.observe.bpf import TRACEFS
    ok = os.path.isdir(os.path.join(TRACEFS, "events"))
    rows.append(("tracefs", ok, f"{TRACEFS} mounted" if ok
                 else f"{TRACEFS} not mounted: mount -t tracefs nodev {TRACEFS}"))
    try:
        ver = subprocess.run(["iptables", "--version"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        rows.append(("iptables backend", "nf_tables" in ver,
                     ver if "nf_tables" in ver else f"{ver}: nftrace needs iptables-nft"))
    except (OSError, subprocess.TimeoutExpired) as e:
        rows.append(("iptables backend", False, f"iptables not runnable: {e}"))
    ok = os.path.isdir("/sys/module/nf_conntrack")
    rows.append(("conntrack module", ok, "nf_conntrack loaded" if ok
                 else "nf_conntrack not loaded: modprobe nf_conntrack"))
    return rows


def register(main: click.Group) -> None:
    """Add trace and doctor to `main`, and `trace` to its `bench` group."""

    @main.command("trace", context_settings={"ignore_unknown_options": True})
    @click.argument("lab")
    @click.argument("command", nargs=-1, type=click.UNPROCESSED)
    @click.option("--pod", help="Where `-- CMD` runs (ns/name or a unique name); required with CMD.")
    @click.option("--port", type=int, help="Only packets/connections with this port (either side).")
    @click.option("--json", "as_json", is_flag=True,
                  help="JSON lines: events, then {\"timeline\": ...}, counters, command.")
    @click.option("--pcap", type=click.Path(file_okay=False),
                  help="Also write one pcapng per interface of every traced netns here.")
    @click.option("--duration", type=float, help="Without CMD: stop after this many seconds.")
    def trace(lab: str, command: tuple[str, ...], pod: str | None, port: int | None,
              as_json: bool, pcap: str | None, duration: float | None) -> None:
        """Trace LAB's namespaces: around `-- CMD` run in --pod, or until Ctrl-C/--duration.

        Exits with CMD's exit code when a command is given."""
        sys.exit(_trace(lab, pod, port, as_json, pcap, duration, command))

    @main.command("doctor")
    @click.option("--json", "as_json", is_flag=True)
    def doctor_cmd(as_json: bool) -> None:
        """Can each collector run here, and if not, why; exit 1 unless all is well."""
        err, out = _consoles()
        rows = _doctor_rows()
        if as_json:
            out.print_json(json.dumps([{"check": n, "ok": ok, "detail": d} for n, ok, d in rows]))
        else:
            t = Table("check", "ok", "what it uses / why not")
            for name, ok, detail in rows:
                t.add_row(name, "[green]ok[/]" if ok else "[bold red]no[/]", escape(detail))
            out.print(t)
        sys.exit(0 if all(ok for _, ok, _ in rows) else 1)

    bench = main.commands["bench"]
    assert isinstance(bench, click.Group)

    @click.command("trace")
    @click.option("--connections", default=2000, show_default=True,
                  help="Connections per measurement (sequential for the rate runs).")
    @click.option("--rate", default=2000, show_default=True,
                  help="Target connections/s of the paced run under tracing.")
    @click.option("--rounds", default=5, show_default=True,
                  help="Interleaved untraced/traced pairs; the overhead compares medians.")
    @click.option("--json", "as_json", is_flag=True)
    def bench_trace(connections: int, rate: int, rounds: int, as_json: bool) -> None:
        """Tracer overhead: connection rate with and without bpf+conntrack; lost events
        of a paced run at RATE connections/s."""
        from netlab.bench.trace import run as run_bench

        err, out = _consoles()
        runtime.require_root()
        result = run_bench(connections, rate, lambda msg: err.print(msg, highlight=False),
                           rounds=rounds)
        if as_json:
            out.print_json(json.dumps(result))
            return
        t = Table("run", "connections", "seconds", "conn/s", "events", "lost")
        for row in result["rows"]:
            lost = row.get("lost")
            t.add_row(row["run"], str(row["connections"]), f"{row['seconds']:.3f}",
                      f"{row['rate']:.0f}", str(row.get("events", "-")),
                      "-" if lost is None else (f"[bold red]{lost}[/]" if lost else "0"))
        out.print(t)
        out.print(f"tracing overhead on connection rate: {result['overhead_pct']:.1f}%  "
                  f"(median traced {result['traced_rate']:.0f}/s vs median untraced "
                  f"{result['baseline_rate']:.0f}/s over {result['rounds']} rounds; "
                  f"untraced spread {result['noise_pct']:.1f}%)")
        n = result["paced_clients"]
        out.print(f"paced run: target {rate}/s with {n} client "
                  f"process{'es' if n != 1 else ''}, achieved {result['paced_rate']:.0f}/s, "
                  f"lost {result['paced_lost']} events")
        if result["paced_lost"]:
            err.print(f"[bold red]paced run lost {result['paced_lost']} events (target 0)[/]")

    bench.add_command(bench_trace)
