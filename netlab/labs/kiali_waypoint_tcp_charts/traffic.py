"""Two TCP connections through the waypoint, then Kiali 1.89's and 2.0's views of them.

What is judged comes from real clients and the lab's real Prometheus: the client's echo,
the series ztunnel and the waypoint exposed and Prometheus scraped, and the answers to
the exact range queries each Kiali version's edge panel sends (mesh-facts-2 §B,
docs/kiali.md). Waits are on series appearing, never sleeps.

Why two connections: a ztunnel series is born when its first connection closes, so
Prometheus' first sample already holds those bytes; `rate()` (every Kiali chart) needs
an *increase* between two samples. The second connection is that increase, and the wait
is on `rate(...[<the chart's rate interval>]) > 0`, the chart's own last point.
"""

from __future__ import annotations

import json
import time
from typing import Any

from netlab.labs import kiali_views as kv
from netlab.labs.context import Context, Pod
from netlab.labs.framework import Evidence

NAMESPACE = "bookinfo"
PORT = 9080
# kiali#7774's request asked duration=300; Kiali's panel step is then
# max(300/30, 2 × scrape interval) = 10 s with the lab's 1 s scrapes, and rateInterval=10s.
DURATION = 300
SCRAPE_INTERVAL = 1  # spec.prometheus.scrapeInterval in topology.yaml; Kiali is told the same
VERSIONS = ("1.89", "2.0")
GRAPH_VERSION = "2.0"  # the graph whose edges the panels are opened on (see explain.md)
WAIT = 15.0  # a deadline for each wait on Prometheus, not a duration
# The two edges of the waypoint hop, as (key, source, destination) for lab_graph.edge.
FROM_WAYPOINT = ("waypoint->ratings-v1", "waypoint", "ratings-v1")
TO_WAYPOINT = ("sleep->waypoint", "sleep", "waypoint")
EDGES = (FROM_WAYPOINT, TO_WAYPOINT)
# The series behind each leg: the client ztunnel reports the hop to the waypoint; only the
# destination ztunnel reports the waypoint's hop to ratings-v1 (mesh-facts-2 §C3).
LEG_TO = 'reporter="source",source_workload="sleep",destination_workload="waypoint"'
LEG_FROM = 'reporter="destination",source_workload="waypoint",destination_workload="ratings-v1"'

# A real TCP client in the sleep pod: send N bytes, half-close, read the echo to the end.
CLIENT = """
import json, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), 5)
s.settimeout(5)
s.sendall(b"r" * n)
s.shutdown(socket.SHUT_WR)
got = 0
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += len(chunk)
print(json.dumps({"sent": n, "echoed": got}))
"""


def connect(ctx: Context, pod: Pod, host: str, nbytes: int) -> dict[str, Any]:
    res = ctx.exec(pod, ["python3", "-c", CLIENT, host, str(PORT), str(nbytes)], timeout=15)
    out: dict[str, Any] = {"exit_code": res.returncode, "stderr": res.stderr.strip()[-500:]}
    try:
        out.update(json.loads(res.stdout))
    except ValueError:
        out["stdout"] = res.stdout[-500:]
    return out


def _pod(p: Pod) -> dict[str, Any]:
    return {k: p[k] for k in ("namespace", "name", "ip", "node")}


def traffic(ctx: Context) -> Evidence:
    sleep, ratings, waypoint = (ctx.pod(f"{NAMESPACE}/{n}") for n in ("sleep", "ratings-v1", "waypoint"))
    prom = kv.prometheus(ctx.instance)
    window = kv.step_and_window(DURATION, SCRAPE_INTERVAL)
    ev: Evidence = {"pods": {"sleep": _pod(sleep), "ratings": _pod(ratings), "waypoint": _pod(waypoint)},
                    "clients": [], "kiali": dict(window)}
    host = f"ratings.{NAMESPACE}"
    ctx.progress(f"TCP connection 1: {NAMESPACE}/sleep → {host}:{PORT} (through the waypoint)")
    ev["clients"].append(connect(ctx, sleep, host, 1000))
    ctx.progress("waiting for both legs' series in Prometheus")
    kv.wait_all(prom, [f"istio_tcp_received_bytes_total{{{LEG_TO}}}",
                       f"istio_tcp_received_bytes_total{{{LEG_FROM}}}"], WAIT)
    ctx.progress("TCP connection 2: the increase rate() needs")
    ev["clients"].append(connect(ctx, sleep, host, 4000))
    rate = window["rate_interval"]
    kv.wait_all(prom, [f"rate({m}{{{leg}}}[{rate}]) > 0" for leg in (LEG_TO, LEG_FROM) for m in kv.TCP_METRICS],
                WAIT)
    ctx.progress(f"asking Prometheus what Kiali {' and '.join(VERSIONS)} ask")
    ev["kiali"].update(read_kiali(prom, ctx.record, time.time()))
    ev["series"] = kv.tcp_series(prom)
    return ev


def read_kiali(prom: Any, record: Any, query_time: float) -> dict[str, Any]:
    """Both versions' graphs and edge panels, from `prom` (anything with Prometheus'
    `query` and `query_range`); every panel asks for the window ending at `query_time`,
    as the UI asks for the one ending now."""
    graphs = {v: kv.graph(prom, record, v, [NAMESPACE], security=False, duration=DURATION)
              for v in VERSIONS}
    return {"query_time": query_time, "graph_version": GRAPH_VERSION,
            "graphs": {v: lg.graph for v, lg in graphs.items()},
            "edges": {v: kv.edges(lg.graph, False) for v, lg in graphs.items()},
            "panels": {v: {key: kv.panel(prom, graphs[GRAPH_VERSION], v, src, dst, DURATION, SCRAPE_INTERVAL,
                                         query_time)
                           for key, src, dst in EDGES}
                       for v in VERSIONS}}
