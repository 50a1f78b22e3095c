"""Four client → server pairs over the mesh, then Kiali 2.0's and 2.1's graphs of them.

What is judged comes from real clients (curl's status), the wire (AF_PACKET copies on
node-2's link while the ambient client calls the sidecar server), ztunnel's own access
log, and the lab's real Prometheus: the series ztunnel and the sidecars exposed, and the
answers to the exact queries each Kiali version's graph and securityPolicy appender send
(mesh-facts-2 §A1–A3, docs/kiali.md). Waits are on conditions, never sleeps.

Each pair gets two requests: a series is born with its first connection, and Kiali's
`rate(...[600s]) > 0` needs Prometheus to have seen it grow.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from netlab import mesh
from netlab.errors import NetlabError
from netlab.kernel import query
from netlab.labs import kiali_views as kv
from netlab.labs.context import Context, Pod, poll_until
from netlab.labs.framework import Evidence
from netlab.observe.witness.wire import Wire
from netlab.plan import naming

PORT = 9080
# The graph's duration, "Last 1m" in Kiali's menu (its default is 10m): every graph query's
# rate window. A minute keeps the lab's few requests readable as rates (2 requests in 10m
# print as "0.00" rps); the lock does not depend on it.
DURATION = 60
VERSIONS = ("2.0", "2.1")
NAMESPACES = ["ns-a", "ns-b"]
WAIT = 15.0  # a deadline for each wait, not a duration
# name → (client pod, server host, client workload, server workload); the report first.
PAIRS: dict[str, tuple[str, str, str, str]] = {
    "ambient->sidecar": ("ns-a/sleep", "ratings.ns-b", "sleep", "ratings-v1"),
    "ambient->ambient": ("ns-a/sleep", "details.ns-a", "sleep", "details-v1"),
    "sidecar->ambient": ("ns-b/curl", "details.ns-a", "curl", "details-v1"),
    "sidecar->sidecar": ("ns-b/curl", "ratings.ns-b", "curl", "ratings-v1"),
}
# The graph edge each pair draws (Kiali injects a service node after the client).
EDGES: dict[str, tuple[str, str]] = {
    "ambient->sidecar": ("ns-a/sleep", "ns-b/ratings (service)"),
    "ambient->ambient": ("ns-a/sleep", "ns-a/details (service)"),
    "sidecar->ambient": ("ns-b/curl", "ns-a/details (service)"),
    "sidecar->sidecar": ("ns-b/curl", "ns-b/ratings (service)"),
}
# What each pair must have put in Prometheus before Kiali is asked (mesh-facts-2 §A4, §8):
# ztunnel reports both ends of ambient↔ambient; only the client's ztunnel reports
# ambient → sidecar, whose sidecar reports the destination with an unknown source; the
# destination ztunnel reports sidecar → ambient; the sidecars report sidecar → sidecar.
SERIES: dict[str, list[str]] = {
    "ambient->sidecar": ['istio_tcp_sent_bytes_total{app="ztunnel",reporter="source",source_workload="sleep",'
                         'destination_workload="ratings-v1"}',
                         'istio_tcp_received_bytes_total{app="ztunnel",reporter="source",source_workload="sleep",'
                         'destination_workload="ratings-v1"}',
                         'istio_requests_total{reporter="destination",source_workload="unknown",'
                         'destination_workload="ratings-v1"}'],
    "ambient->ambient": ['istio_tcp_sent_bytes_total{reporter="destination",source_workload="sleep",'
                         'destination_workload="details-v1"}',
                         'istio_tcp_received_bytes_total{reporter="source",source_workload="sleep",'
                         'destination_workload="details-v1"}'],
    "sidecar->ambient": ['istio_tcp_sent_bytes_total{reporter="destination",source_workload="curl",'
                         'destination_workload="details-v1"}',
                         'istio_requests_total{reporter="source",source_workload="curl",'
                         'destination_workload="details-v1"}'],
    "sidecar->sidecar": ['istio_requests_total{reporter="destination",source_workload="curl",'
                         'destination_workload="ratings-v1"}'],
}


def curl(ctx: Context, pod: str, url: str) -> dict[str, Any]:
    res = ctx.exec(pod, ["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", url], timeout=15)
    return {"url": url, "exit_code": res.returncode, "http_code": res.stdout.strip(),
            "stderr": res.stderr.strip()[-300:]}


def _pod(p: Pod) -> dict[str, Any]:
    return {k: p[k] for k in ("namespace", "name", "ip", "node")}


def traffic(ctx: Context) -> Evidence:
    sleep, ratings = ctx.pod("ns-a/sleep"), ctx.pod("ns-b/ratings-v1")
    prom = kv.prometheus(ctx.instance)
    ev: Evidence = {"pods": {n: _pod(ctx.pod(p)) for n, p in
                             (("sleep", "ns-a/sleep"), ("details", "ns-a/details-v1"),
                              ("curl", "ns-b/curl"), ("ratings", "ns-b/ratings-v1"))},
                    "clients": {k: [] for k in PAIRS}, "kiali": {"duration": DURATION}}
    # 1. The report's request, watched on the server node's link.
    marker = f"/kiali-7811-{uuid.uuid4().hex[:8]}"  # a path that would be readable in plaintext
    node = ctx.node(ratings["node"])
    ctx.progress("ns-a/sleep → ratings.ns-b (ambient → sidecar), captured on the server node's link")
    with Wire(node["netns"], [PORT, mesh.HBONE_PORT], ifname=naming.NODE_IFNAME) as wire:
        ev["clients"]["ambient->sidecar"].append(curl(ctx, "ns-a/sleep", f"http://ratings.ns-b:{PORT}{marker}"))
    ev["wire"] = _wire(wire, ratings, node["name"], marker)
    ev["ztunnel_log"] = _ztunnel_lines(ctx, sleep, ratings)
    # 2. The controls; then a second round, the increase rate() needs.
    for name, (client, host, _, _) in PAIRS.items():
        if name != "ambient->sidecar":
            ctx.progress(f"{client} → {host} ({name})")
            ev["clients"][name].append(curl(ctx, client, f"http://{host}:{PORT}/"))
    ctx.progress("waiting for every pair's series in Prometheus")
    kv.wait_all(prom, [q for qs in SERIES.values() for q in qs], WAIT)
    for name, (client, host, _, _) in PAIRS.items():
        ev["clients"][name].append(curl(ctx, client, f"http://{host}:{PORT}/"))
    kv.wait_all(prom, [f"rate({q}[{DURATION}s]) > 0" for qs in SERIES.values() for q in qs], WAIT)
    ctx.progress(f"asking Prometheus what Kiali {' and '.join(VERSIONS)} ask")
    ev["kiali"].update(read_kiali(prom, ctx.record))
    ev["series"] = [s for s in kv.tcp_series(prom) + _requests(prom)]
    return ev


def read_kiali(prom: Any, record: Any) -> dict[str, Any]:
    """Both versions' namespace graphs of ns-a and ns-b with Display → Security on (Kiali's
    UI defaults otherwise), their edges by name, and every security query they sent."""
    out: dict[str, Any] = {"graphs": {}, "edges": {}, "security_queries": {}}
    for v in VERSIONS:
        lg = kv.graph(prom, record, v, NAMESPACES, security=True, duration=DURATION)
        out["graphs"][v] = lg.graph
        out["edges"][v] = kv.edges(lg.graph, True)
        out["security_queries"][v] = [{"purpose": p, "promql": q, "series": n}
                                      for p, q, n in lg.log.entries if p.startswith("security")]
    return out


def _requests(prom: Any) -> list[dict[str, Any]]:
    return sorted(({**s["metric"], "value": float(s["value"][1])} for s in prom.query("istio_requests_total")),
                  key=lambda s: (s.get("reporter", ""), s.get("source_workload", ""), s.get("destination_workload", "")))


def _wire(wire: Wire, server: Pod, node: str, marker: str) -> dict[str, Any]:
    """Every segment to or from the server pod on the node's link, by port, and whether any
    carried the request in clear text or opened with a TLS handshake record."""
    ip = server["ip"]
    mine = [s for s in wire.segments if ip in (s.saddr, s.daddr)]
    ports = sorted({s.dport if s.daddr == ip else s.sport for s in mine})
    to_server = [s for s in mine if s.daddr == ip and s.payload]
    return {"node": node, "ifname": naming.NODE_IFNAME, "server": f"{ip}", "segments": len(mine),
            "server_ports": ports,
            "payload_segments_to_server": len(to_server),
            "tls_handshakes_to_server": sum(1 for s in to_server if s.payload[:2] == b"\x16\x03"),
            "tls_records_to_server": sum(1 for s in to_server if s.payload[:1] in (b"\x16", b"\x17", b"\x14", b"\x15")
                                         and s.payload[1:2] == b"\x03"),
            "marker": marker, "marker_seen": any(marker.encode() in s.payload for s in mine),
            "http_seen": any(b"HTTP/1.1" in s.payload for s in mine),
            "samples": [s.to_dict(payload_chars=48) for s in to_server[:4]]}


def _ztunnel_lines(ctx: Context, client: Pod, server: Pod, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The client ztunnel's access-log lines for the report's request. ztunnel writes
    "connection complete" when the connection closes, just after curl returns: polled with a
    deadline until it is there."""
    files = query.log_files(query.record_of(ctx.instance), f"ztunnel/{client['node']}")
    hbone_addr = f"{server['ip']}:{PORT}"

    def completed() -> list[dict[str, Any]]:
        lines = []
        for f in files:
            for raw in Path(f).read_text(errors="replace").splitlines():
                if hbone_addr in raw and raw.lstrip().startswith("{"):
                    try:
                        lines.append(json.loads(raw))
                    except ValueError:
                        continue
        return [x for x in lines if x.get("message") == "connection complete"]

    done = poll_until(completed, timeout)
    if not done:
        raise NetlabError(f"ztunnel on {client['node']} logged no \"connection complete\" for "
                          f"{hbone_addr} within {timeout:g}s")
    return done
