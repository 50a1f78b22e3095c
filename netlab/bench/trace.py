"""`netlab bench trace`: what the Tracer costs, and whether it keeps up.

Why these two figures: a tracer that slows the dataplane changes the thing it observes
(timeouts, retransmissions), and one that drops events silently produces timelines
with holes that look like bugs. So, in one run on one small lab (a client pod on
node-1, a tcp-echo pod on node-2, plain networking, so every connection crosses two
veths and the fabric):

- the sequential connection rate of a real client (a Python socket loop inside the
  client pod: connect, send 1 byte, read it back, close), untraced and traced with
  bpf + conntrack, in ROUNDS interleaved pairs (order alternating per round, so drift
  of a shared machine hits both sides); baseline and traced rate are the medians, the
  overhead is the relative drop of the median, and the spread of the untraced runs is
  reported as the noise. One pair alone was not enough here: two untraced runs of
  2,000 connections back to back differed by 10-50% on this shared 2-core VM;
- a paced run at RATE connections/s under tracing, spread over as many client
  processes as the traced sequential rate says are needed, reporting the events the
  collectors lost (target 0) and the rate actually achieved.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from netlab import topology
from netlab.errors import NetlabError
from netlab.kernel import lifecycle, query
from netlab.kernel.processes import run_in
from netlab.model import Lab

Say = Callable[[str], None]
COLLECTORS = ("bpf", "conntrack")
MAX_CLIENTS = 32
# Every connection leaves a TIME_WAIT port in the client pod for 60 s, and connect()
# only picks even ports of the default range (~14k): more connections than that in a
# minute make connect() hunt for ports and the rate collapses (measured: ~230/s).
# The bench's own client pod gets the wide range.
CLIENT_PORT_RANGE = "1024 65000"

BASE = Path(__file__).with_name("trace.yaml")


def bench_lab(name: str) -> Lab:
    """The base lab (client on node-1, tcp-echo on node-2) under a unique name."""
    return replace(topology.load([BASE]), name=name)


def echo_port(lab: Lab) -> int:
    """The port the echo pod declares: the one the clients dial and the tracer filters on."""
    echo = next(d for d in lab.deployments if d.name == "echo")
    return echo.containers[0].ports[0].container_port


# Runs inside the client pod. rate 0 = as fast as possible (sequential); otherwise
# connection i is due at start + i/rate (a time budget, so a slow connection is caught
# up on instead of shifting every later one). start_at is CLOCK_MONOTONIC, shared by
# all processes on the host, so paced clients begin together.
CLIENT = r"""
import json, socket, sys, time
ip, port, n, rate, start_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
time.sleep(max(0.0, start_at - time.monotonic()))
t0 = time.monotonic()
late = errors = 0
for i in range(n):
    if rate:
        d = t0 + i / rate - time.monotonic()
        if d > 0:
            time.sleep(d)
        elif d < -0.005:
            late += 1
    try:
        s = socket.create_connection((ip, port), timeout=5)
        s.sendall(b"x")
        if s.recv(1) != b"x":
            errors += 1
        s.close()
    except OSError:
        errors += 1
print(json.dumps({"n": n, "start": t0, "end": time.monotonic(), "late": late, "errors": errors}))
"""


def _clients(netns: str, ip: str, port: int, counts: list[int], rate_each: float) -> dict[str, Any]:
    """Run one client process per entry of counts, concurrently; merge their figures."""
    start_at = time.monotonic() + 0.3 + 0.02 * len(counts)  # all interpreters up by then
    results: list[Any] = [None] * len(counts)

    def one(i: int) -> None:
        res = run_in(netns, [sys.executable, "-c", CLIENT, ip, str(port), str(counts[i]),
                             str(rate_each), str(start_at)],
                     capture_output=True, text=True, timeout=300)
        results[i] = res

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(counts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    parsed = []
    for res in results:
        if res is None or res.returncode != 0:
            raise NetlabError(f"bench client failed: {getattr(res, 'stderr', '')}")
        parsed.append(json.loads(res.stdout))
    n = sum(p["n"] for p in parsed)
    seconds = max(p["end"] for p in parsed) - min(p["start"] for p in parsed)
    return {"connections": n, "seconds": seconds, "rate": n / seconds,
            "late": sum(p["late"] for p in parsed), "errors": sum(p["errors"] for p in parsed),
            "clients": len(counts)}


def _traced(scope: dict[str, int], port: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """fn() under a Tracer (bpf + conntrack, port filter), drained before stopping."""
    from netlab.observe.tracer import Tracer

    with Tracer(scope, port=port, collectors=COLLECTORS, strict=True) as tracer:
        row = fn()
        tracer.drain(limit=5.0)
    counters = tracer.counters
    row["events"] = sum(c.get("events", 0) for c in counters.values())
    row["lost"] = sum(c.get("lost", 0) for c in counters.values())
    row["counters"] = counters
    return row


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


def run(connections: int, rate: int, say: Say, rounds: int = 5) -> dict[str, Any]:
    lab = bench_lab(f"bt{os.getpid() % 10000}")
    port = echo_port(lab)
    say(f"building lab {lab.name} (client on node-1, tcp-echo on node-2)")
    summary = lifecycle.up(lab).summary
    try:
        pods = {p["deployment"]: p for p in summary["pods"]}
        client, ip = pods["client"]["netns"], pods["echo"]["ip"]
        scope = query.netns_inodes(query.record_of(lab.name))
        seq = lambda: _clients(client, ip, port, [connections], 0)  # noqa: E731
        run_in(client, ["sysctl", "-qw", f"net.ipv4.ip_local_port_range={CLIENT_PORT_RANGE}"],
               check=True)
        say("warm-up: 100 connections")
        _clients(client, ip, port, [100], 0)
        rows: list[dict[str, Any]] = []
        for r in range(1, rounds + 1):
            order = ("untraced", "traced") if r % 2 else ("traced", "untraced")
            for what in order:
                if what == "untraced":
                    say(f"round {r}/{rounds} untraced: {connections} sequential connections")
                    rows.append({"run": f"untraced #{r}", **seq()})
                else:
                    say(f"round {r}/{rounds} traced (bpf+conntrack, port {port}): "
                        f"{connections} sequential connections")
                    rows.append({"run": f"traced #{r}", **_traced(scope, port, seq)})
        untraced = [x["rate"] for x in rows if x["run"].startswith("untraced")]
        traced = [x["rate"] for x in rows if x["run"].startswith("traced")]
        baseline, traced_rate = _median(untraced), _median(traced)
        # Leave each paced client headroom: it must sustain its share while traced.
        clients = max(1, min(MAX_CLIENTS, math.ceil(rate / (0.6 * traced_rate))))
        paced_n = max(connections, 2 * rate)
        say(f"paced, traced: {paced_n} connections at {rate}/s from {clients} client processes")
        rows.append({"run": f"paced {rate}/s traced", **_traced(
            scope, port, lambda: _clients(client, ip, port, _split(paced_n, clients), rate / clients))})
    finally:
        lifecycle.down(lab.name)
    paced = rows[-1]
    return {"connections": connections, "rate_target": rate, "rows": rows, "rounds": rounds,
            "baseline_rate": baseline, "traced_rate": traced_rate,
            "overhead_pct": 100.0 * (baseline - traced_rate) / baseline,
            "noise_pct": 100.0 * (max(untraced) - min(untraced)) / baseline,
            "paced_rate": paced["rate"], "paced_lost": paced["lost"],
            "paced_events": paced["events"], "paced_clients": clients}
