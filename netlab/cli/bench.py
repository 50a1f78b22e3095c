"""`netlab bench topology|hbone|sidecar|waypoint|trace`: figures side by side with a baseline measured in
the same run, rendered as tables (or JSON)."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from netlab.cli.render import err, out
from netlab.kernel.lifecycle import require_root


def _say(msg: str) -> None:
    err().print(escape(msg), highlight=False)


F = TypeVar("F", bound=Callable[..., Any])


def _positive(name: str, default: int, help: str | None = None) -> Callable[[F], F]:
    """A count or a duration: 1 or more, refused as a usage error before anything runs
    (`bench hbone --seconds 0` once reached iperf3 as "run for ever")."""
    return click.option(name, default=default, show_default=True, type=click.IntRange(min=1), help=help)


@click.group()
def bench() -> None:
    """Benchmarks: figures side by side with a baseline measured in the same run."""


@bench.command("topology")
@click.option("--mesh", type=click.Choice(["ambient", "sidecar", "none"]), default="ambient",
              show_default=True, help="The mesh the 5 bench namespaces are enrolled in.")
@click.option("--servers", default=100, show_default=True, type=click.IntRange(min=0),
              help="netlab/http-echo pods behind one Service per namespace.")
@_positive("--pods", 200, "All pods: the servers, one client pod, and idle pods for the rest.")
@_positive("--nodes", 4)
@_positive("--runs", 1, "Repeat and report the median.")
@click.option("--vs-mininet", is_flag=True, help="Also time Mininet with PODS plain hosts.")
@click.option("--curve", is_flag=True,
              help="Instead: up, down and cost per pod at 50, 100, 200, 500 and 1,000 pods "
                   "(half of them servers), the median of --runs builds each.")
@click.option("--json", "as_json", is_flag=True)
def topology(mesh: str, servers: int, pods: int, nodes: int, runs: int, vs_mininet: bool, curve: bool,
             as_json: bool) -> None:
    """Time `up` and `down` of a meshed lab until every server answers through the mesh,
    beside the raw netlink floor and (with --vs-mininet) Mininet, in the same run."""
    from netlab.bench import topology as bt

    if curve:
        # The curve picks its own sizes: an option it would ignore is refused, not dropped.
        ctx = click.get_current_context()
        given = [f"--{p.replace('_', '-')}" for p in ("servers", "pods", "vs_mininet")
                 if ctx.get_parameter_source(p) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"--curve sets the sizes itself (50 to 1,000 pods, half of them "
                                   f"servers) and has no Mininet column: drop {' and '.join(given)}")
    require_root()
    if curve:
        result = bt.curve(mesh, nodes, bt.CURVE_PODS, runs, _say)
        if as_json:
            out().print_json(json.dumps(result))
            return
        _print_curve(result)
        return
    result = bt.run(mesh, servers, pods, nodes, runs, vs_mininet, _say)
    if as_json:
        out().print_json(json.dumps(result))
        return
    _print_topology(result)


def _print_topology(r: dict) -> None:
    o = out()
    ours = r["netlab"]
    t = Table("what", "up (s)", "serve (s)", "down (s)", "up + down (s)")
    t.add_row(f"netlab, {r['mesh']}: {r['nodes']} nodes / {r['pods']} pods / {r['servers']} echo servers",
              f"{ours['up']:.2f}", f"{ours['serve']:.2f}", f"{ours['down']:.2f}",
              f"{ours['up'] + ours['down']:.2f}")
    fl = r["floor"]
    t.add_row(f"raw netlink floor, {r['pods']} namespaces", f"{fl['up']:.2f}", "", f"{fl['down']:.2f}",
              f"{fl['up'] + fl['down']:.2f}")
    if "mininet" in r:
        mn = r["mininet"]
        t.add_row(f"Mininet single,{r['pods']} (lxbr, no controller)", f"{mn['up']:.2f}", "",
                  f"{mn['down']:.2f}", f"{mn['up'] + mn['down']:.2f}")
    o.print(t)
    vs = r["ratios"]["netlab_vs_floor"]
    o.print(f"netlab / floor: up {vs['up']:.1f}x, down {vs['down']:.1f}x, up + down {vs['total']:.1f}x")
    if "faster_than_mininet" in r["ratios"]:
        mn = r["ratios"]["faster_than_mininet"]
        o.print(f"netlab is {mn['total']:.1f}x faster than Mininet (up + down; up {mn['up']:.1f}x, "
                f"down {mn['down']:.1f}x)")
    if r["servers"]:
        through = (f"; the ztunnels counted {ours['mesh_connections']} inbound connections"
                   if ours["mesh_connections"] is not None else "")
        o.print(f"serve: a client in bench-0/client asked each of {r['servers']} servers by pod IP and "
                f"each Service by DNS name ({ours['requests']} requests), all answered{through}")
    m = r["memory"]
    o.print(f"memory (PSS): {m['total_mib']:.0f} MiB in {m['processes']} processes, "
            f"{m['per_pod_mib']:.2f} MiB per pod; echo servers {m['per_server_mib']:.2f} MiB each")
    o.print(f"cost per pod (up + down): {ours['per_pod_ms']:.1f} ms")


def _print_curve(r: dict) -> None:
    t = Table("pods", "servers", "up (s)", "serve (s)", "down (s)", "ms / pod", f"vs {r['reference']} pods",
              "floor up+down (s)", "vs floor", "PSS MiB / pod")
    for row in r["rows"]:
        dev = row["vs_reference"]
        t.add_row(str(row["pods"]), str(row["servers"]), f"{row['up']:.2f}", f"{row['serve']:.2f}",
                  f"{row['down']:.2f}", f"{row['per_pod_ms']:.1f}", "" if dev is None else f"{dev:+.0%}",
                  f"{row['floor_up'] + row['floor_down']:.2f}", f"{row['vs_floor']:.1f}x",
                  f"{row['memory']['per_pod_mib']:.2f}")
    out().print(t)
    out().print(f"mesh {r['mesh']}, {r['nodes']} nodes, half of the pods echo servers; medians of "
                f"{r['runs']} run{'s' if r['runs'] != 1 else ''} per size; ms / pod = (up + down) / pods")


@bench.command("hbone")
@_positive("--seconds", 5, "Duration of each throughput run.")
@_positive("--connections", 300, "Connections for the latency run.")
@click.option("--istio", "version", default="1.24+", type=click.Choice(["1.23", "1.24+"]), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def hbone(seconds: int, connections: int, version: str, as_json: bool) -> None:
    """Throughput and connect latency through two ztunnels, beside the direct path and bare TLS."""
    from netlab.bench.hbone import run

    require_root()
    r = run(seconds, connections, version, _say)
    if as_json:
        out().print_json(json.dumps(r))
        return
    t = Table("path", "Gbit/s", "CPU-s/GB (cores)", "p50 ms", "p99 ms", "conn/s")

    def row(label: str, tput: dict[str, float], lat: dict[str, float] | None = None) -> None:
        cells = [f"{lat['p50_ms']:.2f}", f"{lat['p99_ms']:.2f}", f"{lat['conn_per_s']:.0f}"] if lat else ["", "", ""]
        t.add_row(label, f"{tput['gbps']:.2f}", f"{tput['cpu_s_per_gb']:.2f} ({tput['cpu_cores']:.1f})", *cells)

    row("direct veth, out of mesh", r["plain"], r["plain_latency"])
    row("ambient: 2 ztunnels, HBONE", r["mesh"], r["mesh_latency"])
    row("2 socat TLS relays (C)", r["c_relays"])
    row("bare Python TLS, loopback", r["bare_tls"])
    o = out()
    o.print(t)
    per_zt = ", ".join(f"{node} {v:.2f}" for node, v in sorted(r["mesh"].get("process_cpu_s_per_gb", {}).items()))
    o.print(f"of which each ztunnel's own CPU-s/GB: {per_zt} (node-1 sends, node-2 receives)")
    o.print("Gbit/s: iperf3 (socket stream for bare TLS); CPU-s/GB: CPU time of the whole machine "
            "per GB moved, and cores busy; p50/p99: connect → first echoed byte, warm pool; "
            "socat relays sit in the client and server pods where the ztunnels would.")
    o.print(f"HBONE / bare Python TLS = {r['hbone_vs_bare_tls']:.0%} (target ≥ 50%); "
            f"HBONE / direct = {r['hbone_vs_direct']:.1%}")
    o.print(f"HBONE / 2 C TLS relays = {r['hbone_vs_c_relays']:.0%}; "
            f"2 C TLS relays / bare Python TLS = {r['c_relays_vs_bare_tls']:.0%} "
            f"(a pair of TLS proxies on this {os.cpu_count()}-CPU machine)")


@bench.command("sidecar")
@_positive("--seconds", 5, "Duration of each wrk (maximum rate) run.")
@_positive("--connections", 10, "wrk's connections (one thread).")
@_positive("--rate", 500, "Requests/s of the fixed-rate run.")
@_positive("--rate-seconds", 5, "Duration of each fixed-rate run.")
@_positive("--paced-connections", 4, "Keep-alive connections of the fixed-rate client.")
@_positive("--rounds", 3, "Fixed-rate runs per path, interleaved over the paths; medians are reported.")
@click.option("--json", "as_json", is_flag=True)
def sidecar(seconds: int, connections: int, rate: int, rate_seconds: int, paced_connections: int,
            rounds: int, as_json: bool) -> None:
    """HTTP requests/s and p50/p99 through a client and a server sidecar, beside the direct
    path and the ambient path: wrk at the maximum rate, a paced client at a fixed rate."""
    from netlab.bench import sidecar as bs

    require_root()
    r = bs.run(seconds, connections, rate, rate_seconds, paced_connections, rounds, _say)
    if as_json:
        out().print_json(json.dumps(r))
        return
    t = Table("path", "req/s", "vs direct", "p50 ms", "p99 ms", "CPU ms/req",
              f"p50 ms @{rate}/s", f"p90 ms @{rate}/s", f"p99 ms @{rate}/s", "added p50 / proxy pair")
    for key, p in r["paths"].items():
        m, f = p["max"], p["fixed"]
        added = p["added_p50_per_pair_ms"]
        t.add_row(p["label"], f"{m['rps']:.0f}", f"{p['rps_vs_direct']:.2f}", f"{m['p50_ms']:.2f}",
                  f"{m['p99_ms']:.2f}", f"{m['cpu_ms_per_request']:.2f}", f"{f['p50_ms']:.2f}",
                  f"{f['p90_ms']:.2f}", f"{f['p99_ms']:.2f}", "" if added is None else f"{added:+.2f} ms")
    o = out()
    o.print(t)
    o.print(f"req/s, p50/p99: wrk -t1 -c{connections} -d{seconds}s (closed loop, maximum rate); "
            f"@{rate}/s: a paced Python client (wrk2 is not in Debian), {paced_connections} keep-alive "
            f"connections, each request timed from its write to the end of its answer, medians of "
            f"{rounds} interleaved runs of {rate_seconds}s (p50 spread: "
            + ", ".join(f"{k} {p['fixed']['p50_spread_ms'][0]:.2f}–{p['fixed']['p50_spread_ms'][1]:.2f}"
                        for k, p in r["paths"].items())
            + "; achieved " + ", ".join(f"{k} {p['fixed']['rate']:.0f}/s" for k, p in r["paths"].items())
            + f"); CPU: the whole {r['cpus']}-CPU machine per request.")
    o.print(f"through the proxies: the server sidecar counted {r['through_proxies']['sidecar']:.0f} "
            f"mTLS requests; the destination ztunnel {r['through_proxies']['ambient']:.0f} HBONE connections.")
    for key in ("sidecar", "ambient"):
        p = r["paths"][key]
        verdict = "meets" if p["meets_target"] else "[bold red]misses[/]"
        o.print(f"{key}: {p['added_p50_per_pair_ms']:+.2f} ms p50 per proxy pair at {rate} req/s "
                f"({verdict} the target of ≤ {bs.TARGET_ADDED_P50_MS:g} ms); {p['added_p90_ms']:+.2f} ms "
                f"at p90 (anchor: Envoy adds about {bs.ENVOY_P90_ANCHOR_MS:g} ms at p90 per proxy, "
                f"{2 * bs.ENVOY_P90_ANCHOR_MS:g} ms per pair, Istio's performance page); maximum req/s "
                f"{p['rps_vs_direct']:.0%} of direct")


@bench.command("waypoint")
@_positive("--seconds", 4, "Duration of each wrk run.")
@_positive("--connections", 10, "wrk's connections (one thread).")
@_positive("--rounds", 3, "wrk runs per path, interleaved over the paths; medians are reported.")
@click.option("--json", "as_json", is_flag=True)
def waypoint(seconds: int, connections: int, rounds: int, as_json: bool) -> None:
    """HTTP requests/s and p50/p99 (wrk) through ztunnel only and through a waypoint, beside
    the direct path, in one run."""
    from netlab.bench import waypoint as bw

    require_root()
    r = bw.run(seconds, connections, rounds, _say)
    if as_json:
        out().print_json(json.dumps(r))
        return
    t = Table("path", "req/s", "vs direct", "p50 ms", "p99 ms", "added p50 ms", "CPU ms/req")
    for p in r["paths"].values():
        t.add_row(p["label"], f"{p['rps']:.0f}", f"{p['rps_vs_direct']:.2f}", f"{p['p50_ms']:.2f}",
                  f"{p['p99_ms']:.2f}", f"{p['added_p50_ms']:+.2f}", f"{p['cpu_ms_per_request']:.2f}")
    o = out()
    o.print(t)
    w = r["waypoint_vs_ztunnel"]
    o.print(f"waypoint / ztunnel only: {w['rps']:.2f}x req/s, {w['p50_ms']:+.2f} ms p50, {w['p99_ms']:+.2f} ms p99, "
            f"{w['cpu_ms_per_request']:.2f}x CPU per request")
    o.print(f"wrk -t1 -c{connections} -d{seconds}s --latency (closed loop, keep-alive), {rounds} interleaved runs "
            "per path, medians (req/s spread: "
            + ", ".join(f"{k} {p['rps_spread'][0]:.0f}–{p['rps_spread'][1]:.0f}" for k, p in r["paths"].items())
            + f"); CPU: the whole {r['cpus']}-CPU machine per request. Client on node-1, server and waypoint "
            "on node-2; every run checked against the waypoint's and the server ztunnel's counters.")


@bench.command("trace")
@_positive("--connections", 2000, "Connections per measurement (sequential for the rate runs).")
@_positive("--rate", 2000, "Target connections/s of the paced run under tracing.")
@_positive("--rounds", 5, "Interleaved untraced/traced pairs; the overhead compares medians.")
@click.option("--json", "as_json", is_flag=True)
def trace(connections: int, rate: int, rounds: int, as_json: bool) -> None:
    """Tracer overhead: connection rate with and without bpf+conntrack; lost events
    of a paced run at RATE connections/s."""
    from netlab.bench.trace import run

    require_root()
    result = run(connections, rate, _say, rounds=rounds)
    if as_json:
        out().print_json(json.dumps(result))
        return
    t = Table("run", "connections", "seconds", "conn/s", "events", "lost")
    for r in result["rows"]:
        lost = r.get("lost")
        t.add_row(r["run"], str(r["connections"]), f"{r['seconds']:.3f}",
                  f"{r['rate']:.0f}", str(r.get("events", "-")),
                  "-" if lost is None else (f"[bold red]{lost}[/]" if lost else "0"))
    o = out()
    o.print(t)
    o.print(f"tracing overhead on connection rate: {result['overhead_pct']:.1f}%  "
            f"(median traced {result['traced_rate']:.0f}/s vs median untraced "
            f"{result['baseline_rate']:.0f}/s over {result['rounds']} rounds; "
            f"untraced spread {result['noise_pct']:.1f}%)")
    n = result["paced_clients"]
    o.print(f"paced run: target {rate}/s with {n} client "
            f"process{'es' if n != 1 else ''}, achieved {result['paced_rate']:.0f}/s, "
            f"lost {result['paced_lost']} events")
    if result["paced_lost"]:
        err().print(f"[bold red]paced run lost {result['paced_lost']} events (target 0)[/]")


COMMANDS: list[click.Command] = [bench]
