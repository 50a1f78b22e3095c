"""`netlab bench waypoint`: HTTP requests/s and p50/p99 with wrk through ztunnel only and
through a waypoint, beside the direct path, in one run.

The lab (waypoint.yaml): a client on node-1 and an HTTP echo server on node-2, out of the
mesh (the direct path: veth, routing, kube-proxy's DNAT) and in ambient, where one server
pod stands behind two Services: `server` (client ztunnel → HBONE → server ztunnel) and
`server-wp`, which uses the waypoint (client ztunnel → HBONE → waypoint on node-2 → HBONE
→ server ztunnel). Each path is driven by Debian's `wrk` in its client pod (closed loop,
keep-alive connections) at its Service's ClusterIP.

Runs are interleaved (direct, ztunnel, waypoint, direct, ...) for `rounds` rounds, so a
burst of load from elsewhere on the machine hits every path alike; each path's figures
are the medians of its rounds. Every run is checked against the proxies' own counters:
the waypoint's `istio_requests_total{reporter="waypoint"}` must grow by at least the
requests wrk completed on the waypoint path and not at all on the others, and the
server's ztunnel must count HBONE connections on both ambient paths, so a path that
bypassed its proxies cannot pass for one that did not.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from netlab import mesh, topology
from netlab.bench.wrk import run_wrk
from netlab.errors import BenchError
from netlab.kernel import lifecycle
from netlab.model import Lab
from netlab.observe import metrics

Say = Callable[[str], None]
BASE = Path(__file__).with_name("waypoint.yaml")
PORT = 8080
SETTLE_POLL = 0.1  # between two reads of the proxies' counters that must agree
# key, namespace, Service, label
PATHS = (("direct", "plain", "server", "direct, out of mesh"),
         ("ztunnel", "amb", "server", "ztunnel only: ztunnel → HBONE → ztunnel"),
         ("waypoint", "amb", "server-wp", "waypoint: ztunnel → HBONE → waypoint → HBONE → ztunnel"))


def bench_lab(name: str) -> Lab:
    return replace(topology.load([BASE]), name=name)


def _counter(netns: str, port: int, path: str, name: str, labels: dict[str, str]) -> float:
    text = metrics.http_get(netns, port, path)
    return sum(s.value for s in metrics.parse(netns, text) if s.name == name
               and all(s.labels.get(k) == v for k, v in labels.items()))


def _pod(summary: dict[str, Any], ns: str, name: str) -> dict[str, Any]:
    return next(p for p in summary["pods"] if p["namespace"] == ns and name in (p.get("deployment"), p["name"]))


def _vip(summary: dict[str, Any], ns: str, service: str) -> str:
    return next(s["clusterIP"] for s in summary["services"] if (s["namespace"], s["name"]) == (ns, service))


class Counters:
    """What the proxies counted so far: requests at the waypoint, and HBONE connections
    into the server's ztunnel from the client (ztunnel path) and from the waypoint."""

    def __init__(self, summary: dict[str, Any]) -> None:
        nodes = {n["name"]: n["netns"] for n in summary["nodes"]}
        self.waypoint_netns = _pod(summary, "amb", "waypoint")["netns"]
        self.server_node = nodes[_pod(summary, "amb", "server")["node"]]

    def settled(self, timeout: float = 3.0) -> dict[str, float]:
        """The counters once they stop moving: wrk stops with requests in flight, which the
        proxies finish (and count) after wrk has exited; they belong to the run before."""
        deadline = time.monotonic() + timeout
        last = self.read()
        while time.monotonic() < deadline:
            time.sleep(SETTLE_POLL)
            now = self.read()
            if now == last:
                return now
            last = now
        return last

    def read(self) -> dict[str, float]:
        inbound = {"reporter": "destination", "destination_workload": "server",
                   "destination_workload_namespace": "amb", "connection_security_policy": "mutual_tls"}
        opened = "istio_tcp_connections_opened_total"
        return {
            "waypoint_requests": _counter(self.waypoint_netns, mesh.METRICS_PORT, "/stats/prometheus",
                                          "istio_requests_total", {"reporter": "waypoint"}),
            "hbone_from_client": _counter(self.server_node, mesh.METRICS_PORT, "/metrics", opened,
                                          {**inbound, "source_workload": "client"}),
            "hbone_from_waypoint": _counter(self.server_node, mesh.METRICS_PORT, "/metrics", opened,
                                            {**inbound, "source_workload": "waypoint"}),
        }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "cpu_cores")}
    return {**med, "requests": sum(r["requests"] for r in runs), "errors": sum(r["errors"] for r in runs),
            "rps_spread": [min(r["rps"] for r in runs), max(r["rps"] for r in runs)], "runs": runs}


def run(seconds: int, connections: int, rounds: int, say: Say) -> dict[str, Any]:
    name = f"bw{os.getpid() % 10000}"
    say(f"building lab {name} (plain: out of mesh; amb: ambient, Services server and server-wp → waypoint)")
    summary = lifecycle.up(bench_lab(name)).summary
    result: dict[str, Any] = {"lab": name, "seconds": seconds, "connections": connections, "rounds": rounds,
                              "cpus": os.cpu_count(), "paths": {}}
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key, *_ in PATHS}
    try:
        counters = Counters(summary)
        where = {key: (_pod(summary, ns, "client")["netns"], _vip(summary, ns, svc), f"{svc}.{ns}:{PORT}")
                 for key, ns, svc, _ in PATHS}
        # One request per path first: pools, certificates and the waypoint's upstreams warm,
        # outside the measured runs.
        for key in where:
            run_wrk(where[key][0], f"http://{where[key][1]}:{PORT}/warm", where[key][2], 1, 1)
        for i in range(rounds):
            for key, *_ in PATHS:
                netns, vip, host = where[key]
                say(f"round {i + 1}/{rounds}, {key}: wrk -t1 -c{connections} -d{seconds}s")
                before = counters.settled()
                r = run_wrk(netns, f"http://{vip}:{PORT}/bench", host, seconds, connections)
                after = counters.settled()
                r["counted"] = {k: after[k] - before[k] for k in after}
                runs[key].append(r)
    finally:
        lifecycle.down(name)
    for key, ns, svc, label in PATHS:
        result["paths"][key] = {"label": label, "namespace": ns, "service": svc, **_median(runs[key])}
    _check(result)
    _ratios(result)
    return result


def _check(result: dict[str, Any]) -> None:
    """Each run crossed exactly the proxies its path claims, and no client saw an error:
    the direct path touches none; the ztunnel path opens HBONE from the client into the
    server's ztunnel and never meets the waypoint; the waypoint path is counted request by
    request at the waypoint, whose second leg is the one that reaches the server's ztunnel."""
    for key, p in result["paths"].items():
        if p["errors"]:
            raise BenchError(f"{key}: {p['errors']} requests failed or were not 200")
        for r in p["runs"]:
            c = r["counted"]
            ok = {"direct": not any(c.values()),
                  "ztunnel": c["hbone_from_client"] >= 1 and not c["waypoint_requests"]
                  and not c["hbone_from_waypoint"],
                  "waypoint": c["waypoint_requests"] >= r["requests"] and c["hbone_from_waypoint"] >= 1
                  and not c["hbone_from_client"]}[key]
            if not ok:
                raise BenchError(f"{key}: the proxies' counters do not fit the path ({r['requests']} requests "
                                 f"completed; counted {c})")


def _ratios(result: dict[str, Any]) -> None:
    paths = result["paths"]
    direct, zt, wp = paths["direct"], paths["ztunnel"], paths["waypoint"]
    for p in paths.values():
        p["rps_vs_direct"] = p["rps"] / direct["rps"]
        p["added_p50_ms"] = p["p50_ms"] - direct["p50_ms"]
        p["added_p99_ms"] = p["p99_ms"] - direct["p99_ms"]
    result["waypoint_vs_ztunnel"] = {
        "rps": wp["rps"] / zt["rps"], "p50_ms": wp["p50_ms"] - zt["p50_ms"], "p99_ms": wp["p99_ms"] - zt["p99_ms"],
        "cpu_ms_per_request": wp["cpu_ms_per_request"] / zt["cpu_ms_per_request"]}
