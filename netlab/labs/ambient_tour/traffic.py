"""The tour's steps on a built instance: real clients, and what the kernel and the proxies show.

One run (`run="tour"`) walks the page's steps on one instance; the variants that share it
are each judged on their own step's evidence. Isolation is what makes that honest, so
every step keeps to its own:

- **its own pairs.** A step's HBONE pools are its own: out-of-mesh uses only `legacy`
  pods; the L4 step is the first and only one to use C1→S1 and C2→S1; the same-node
  step alone uses C3; the L7 step alone uses C2→echo; the bypass step alone sends from
  legacy/client to `echo`. So a connection a step counts was opened by that step.
- **its own window.** Captures (AF_PACKET on the node links), the conntrack trace and
  the proxies' logs are read from the step's start to its end; a log line is waited for
  (ztunnel writes it at close), never assumed.
- **its own series.** Each metric check names the step's workloads, and is read once a
  scrape newer than the last step is in (a condition on the counters themselves).

The L4 DENY and the 90/10 split change the model (a policy, the route's weights), so
they run on instances of their own (`run="deny"`, `run="split"`), without Prometheus,
which neither reads.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Callable

from netlab import mesh
from netlab.dataplane.ca import CAError, CertClient
from netlab.kernel import netns as nsmod
from netlab.kernel import processes
from netlab.labs.context import Context, poll_until
from netlab.labs.framework import Evidence
from netlab.observe.proxylog import envoy
from netlab.observe.tracer import Tracer
from netlab.observe.witness.wire import Wire
from netlab.plan import naming
from netlab.snapshot import ProxySnapshot
from netlab.telemetry.promclient import Prometheus, wait_for_series

N_L4 = 10  # requests per client in the L4 step, each its own TCP connection
N_SAME_NODE = 3
N_ROUTE = 20
N_SPLIT = 200
CURL_TIMEOUT = 5
LOG_TIMEOUT = 5.0  # for a proxy's access-log line to appear after its connection closed
PROM_TIMEOUT = 20.0
HTTP_PORTS = (80, 8080)  # the Services' port and the pods' target port
WIRE_PORTS = (*HTTP_PORTS, mesh.HBONE_PORT, mesh.INBOUND_PORT)
WAYPOINT = "tour/waypoint"
ZT_FIELDS = ("direction", "src.addr", "src.workload", "src.identity", "dst.addr", "dst.hbone_addr",
             "dst.workload", "dst.identity", "dst.service", "error")
WP_FIELDS = ("method", "path", "response_code", "response_code_details", "upstream_host",
             "upstream_cluster", "route_name", "downstream_remote_address", "authority")


def traffic(ctx: Context) -> Evidence:
    run = ctx.params["run"]
    tour = Tour(ctx)
    if run == "deny":
        return {"pods": tour.pod_summary(), "deny": tour.deny()}
    if run == "split":
        return {"pods": tour.pod_summary(), "split": tour.split()}
    ev: Evidence = {"pods": tour.pod_summary()}
    for name, step in (("out_of_mesh", tour.out_of_mesh), ("l4", tour.l4),
                       ("same_node", tour.same_node), ("legs", tour.legs), ("route", tour.route),
                       ("l7", tour.l7), ("bypass", tour.bypass), ("identity", tour.identity)):
        ctx.progress(name.replace("_", " "))
        ev[name] = step()
    ctx.progress("metrics in the lab's Prometheus")
    ev["metrics"] = tour.metrics()
    # Read once every step's lines are in: a ztunnel that had handled the out-of-mesh
    # request would have logged it at close, long before the metrics came.
    lines = tour.all_ztunnel_lines()
    server = {tour.ip("legacy/server"), tour.vip("legacy", "server")}
    ev["out_of_mesh"]["ztunnel_lines_in_run"] = len(lines)
    ev["out_of_mesh"]["ztunnel_lines_naming_server"] = [
        x for x in lines if any(str(x.get(k, "")).rpartition(":")[0] in server
                                for k in ("src.addr", "dst.addr", "dst.hbone_addr"))]
    ev["identity"]["ztunnel_src_identities"] = sorted({x.get("src.identity") for x in lines} - {None})
    return ev


class Logs:
    """The lines a lab process appends to its log from now on (its access log)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = Path(path).stat().st_size if Path(path).exists() else 0

    def lines(self) -> list[str]:
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self.offset)
                return f.read().splitlines()
        except OSError:
            return []

    def ztunnel(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines():
            if line.startswith("{") and '"scope":"access"' in line:
                f = json.loads(line)
                out.append({k: f.get(k) for k in ZT_FIELDS if f.get(k) is not None})
        return out

    def waypoint(self) -> list[dict[str, Any]]:
        recs = (envoy(line, "waypoint") for line in self.lines())
        return [{k: r.fields.get(k) for k in WP_FIELDS if r.fields.get(k) is not None}
                for r in recs if r is not None]


def until(what: Callable[[], Any], timeout: float = LOG_TIMEOUT) -> Any:
    """`poll_until` with this lab's log deadline."""
    return poll_until(what, timeout)


def _segments(wire: Wire) -> list[dict[str, Any]]:
    """What a link received (a node's eth0): addresses, flags, payload size, first bytes."""
    return [{"saddr": s.saddr, "sport": s.sport, "daddr": s.daddr, "dport": s.dport,
             "flags": s.flags, "bytes": len(s.payload), "head": s.payload[:3].hex()}
            for s in wire.segments]


class Tour:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.pods = {ref: ctx.pod(ref) for ref in ("tour/c1", "tour/c2", "tour/c3", "tour/s1",
                                                   "tour/echo-v1", "tour/echo-v2", WAYPOINT,
                                                   "legacy/client", "legacy/server")}
        procs = {p.name: p for p in ctx.record.processes}
        self.ztunnel_logs = {n: procs[f"ztunnel/{n}"].log for n in ("w1", "w2")}
        self.waypoint_log = next(p.log for name, p in procs.items() if name.startswith("waypoint"))
        self.nodes = {n: ctx.node(n)["netns"] for n in ("w1", "w2")}
        self._first: dict[str, int] = {}  # ztunnel log offsets at the start of the run
        for n, path in self.ztunnel_logs.items():
            self._first[n] = Logs(path).offset

    def ip(self, ref: str) -> str:
        return str(self.pods[ref]["ip"])

    def vip(self, namespace: str, service: str) -> str:
        return next(str(s["clusterIP"]) for s in self.ctx.record.summary.get("services", [])
                    if (s["namespace"], s["name"]) == (namespace, service))

    def pod_summary(self) -> dict[str, dict[str, Any]]:
        return {ref: {"ip": p["ip"], "node": p["node"], "netns": p["netns"]}
                for ref, p in self.pods.items()}

    # -- clients ---------------------------------------------------------------------------
    def curl(self, ref: str, urls: list[str], *args: str, each_own_connection: bool = False) -> dict[str, Any]:
        """One curl process; `-w` marks each response's status so bodies and codes split."""
        argv = ["curl", "-sS", "-m", str(CURL_TIMEOUT), *args]
        if each_own_connection:
            argv += ["-H", "Connection: close"]
        argv += ["-w", "\\n@@%{http_code}@@\\n", *urls]
        res = self.ctx.exec(self.pods[ref], argv, timeout=CURL_TIMEOUT * max(1, len(urls)) + 10)
        bodies, codes = [], []
        for chunk in res.stdout.split("@@\n"):
            if "\n@@" in chunk:
                body, _, code = chunk.rpartition("\n@@")
                bodies.append(body)
                codes.append(code)
        servers = []
        for b in bodies:
            try:
                servers.append(json.loads(b).get("server"))
            except ValueError:
                servers.append(None)
        return {"client": ref, "argv": argv[:len(argv) - len(urls)] + urls[:1] + (["…"] if len(urls) > 1 else []),
                "requests": len(urls), "exit_code": res.returncode, "codes": codes, "servers": servers,
                "bodies": [b[:300] for b in bodies[:3]], "stderr": res.stderr.strip()[-300:]}

    def zlogs(self) -> dict[str, Logs]:
        return {n: Logs(p) for n, p in self.ztunnel_logs.items()}

    def all_ztunnel_lines(self) -> list[dict[str, Any]]:
        out = []
        for n, path in self.ztunnel_logs.items():
            logs = Logs(path)
            logs.offset = self._first[n]
            out += logs.ztunnel()
        return out

    # -- steps -----------------------------------------------------------------------------
    def out_of_mesh(self) -> Evidence:
        """legacy/client (W1) → legacy/server (W2): plain Kubernetes."""
        marker = f"/tour/out-of-mesh/{self.ctx.instance}"
        with Wire(self.nodes["w2"], WIRE_PORTS, ifname=naming.NODE_IFNAME) as wire:
            res = self.curl("legacy/client", [f"http://server.legacy{marker}"])
        # A ztunnel that handled the request logs it at close, after curl has its answer;
        # what it would log is checked at the end of the run (all_ztunnel_lines), when
        # every later step's lines are there.
        return {"client": res, "marker": marker, "server_ip": self.ip("legacy/server"),
                "wire": {"segments": _segments(wire),
                         "marker_in_clear": bool(wire.carrying(marker.encode()))}}

    def l4(self) -> Evidence:
        """C1 and C2 on W1 → S1 on W2, N requests each, each on its own TCP connection."""
        logs = self.zlogs()
        with Wire(self.nodes["w2"], WIRE_PORTS, ifname=naming.NODE_IFNAME) as wire:
            clients = {c: self.curl(f"tour/{c}", [f"http://s1/tour/l4/{c}"] * N_L4,
                                    each_own_connection=True) for c in ("c1", "c2")}
            # Each side logs a tunnel when it closes: wait for both sides' lines.
            until(lambda: all(len([x for x in logs[n].ztunnel() if x.get("direction") == d]) >= 2 * N_L4
                              for n, d in (("w1", "outbound"), ("w2", "inbound"))))
        return {"clients": clients, "n": N_L4, "s1": self.ip("tour/s1"),
                "client_ips": {c: self.ip(f"tour/{c}") for c in ("c1", "c2")},
                "wire": {"segments": _segments(wire),
                         "marker_in_clear": bool(wire.carrying(b"/tour/l4/"))},
                "w1_ztunnel": logs["w1"].ztunnel(), "w2_ztunnel": logs["w2"].ztunnel()}

    def same_node(self) -> Evidence:
        """C3 on W2 → S1 on W2: never on a node link, still through W2's ztunnel."""
        logs = self.zlogs()
        with Wire(self.nodes["w2"], WIRE_PORTS, ifname=naming.NODE_IFNAME) as w2, \
                Wire(self.nodes["w1"], WIRE_PORTS, ifname=naming.NODE_IFNAME) as w1:
            res = self.curl("tour/c3", ["http://s1/tour/same-node"] * N_SAME_NODE,
                            each_own_connection=True)
            lines = until(lambda: len(logs["w2"].ztunnel()) >= 2 * N_SAME_NODE and logs["w2"].ztunnel())
        c3 = self.ip("tour/c3")
        return {"client": res, "n": N_SAME_NODE, "c3": c3,
                "link_segments_of_c3": [s for s in _segments(w1) + _segments(w2)
                                        if c3 in (s["saddr"], s["daddr"])],
                "w2_ztunnel": lines or logs["w2"].ztunnel(), "w1_ztunnel": logs["w1"].ztunnel()}

    def legs(self) -> Evidence:
        """C1 → echo: client ztunnel ═HBONE═▶ waypoint ═HBONE═▶ echo's ztunnel."""
        marker = f"/tour/legs/{self.ctx.instance}"
        logs, wp_log = self.zlogs(), Logs(self.waypoint_log)
        scope = [self.pods[r]["netns"] for r in ("tour/c1", WAYPOINT, "tour/echo-v1")]
        tracer = Tracer(self.ctx.scope(*scope), collectors=("conntrack",), strict=False)
        with Wire(self.nodes["w1"], WIRE_PORTS, ifname=naming.NODE_IFNAME) as w1, \
                Wire(self.nodes["w2"], WIRE_PORTS, ifname=naming.NODE_IFNAME) as w2:
            with tracer:
                res = self.curl("tour/c1", [f"http://echo{marker}"])
                tracer.wait_for(lambda evs: sum(e.kind == "ct_new" and e.dport == mesh.HBONE_PORT
                                                for e in evs) >= 2, timeout=2.0)
            wp = until(lambda: [x for x in wp_log.waypoint() if x.get("path") == marker])
            until(lambda: {("outbound", "c1-0", "waypoint-0"), ("inbound", "waypoint-0", "echo-v1-0")}
                  <= {(x.get("direction"), x.get("src.workload"), x.get("dst.workload"))
                      for x in logs["w1"].ztunnel()})
        trace = [json.loads(e.to_json()) for e in tracer.events
                 if e.source == "conntrack" and e.kind == "ct_new" and e.proto == "tcp"]
        return {"client": res, "marker": marker,
                "ips": {"c1": self.ip("tour/c1"), "waypoint": self.ip(WAYPOINT),
                        "echo-v1": self.ip("tour/echo-v1"), "echo-v2": self.ip("tour/echo-v2")},
                "trace": trace, "trace_skipped": tracer.skipped,
                "wire": {"segments": _segments(w1) + _segments(w2),
                         "marker_in_clear": bool(w1.carrying(marker.encode()) or w2.carrying(marker.encode()))},
                "w1_ztunnel": logs["w1"].ztunnel(), "waypoint_log": wp}

    def route(self) -> Evidence:
        """C1 → echo, N times, each its own connection: the HTTPRoute picks echo-v1."""
        wp_log = Logs(self.waypoint_log)
        res = self.curl("tour/c1", ["http://echo/tour/route"] * N_ROUTE, each_own_connection=True)
        lines = until(lambda: len([x for x in wp_log.waypoint() if x.get("path") == "/tour/route"]) >= N_ROUTE
                      and wp_log.waypoint())
        return {"client": res, "n": N_ROUTE, "waypoint_log": lines or wp_log.waypoint()}

    def l7(self) -> Evidence:
        """C2 → echo: GET, then POST; the waypoint's ALLOW-GET policy decides."""
        wp_log = Logs(self.waypoint_log)
        get = self.curl("tour/c2", ["http://echo/tour/l7"])
        post = self.curl("tour/c2", ["http://echo/tour/l7"], "-X", "POST", "-d", "tour=l7")
        lines = until(lambda: len(wp_log.waypoint()) >= 2 and wp_log.waypoint())
        return {"get": get, "post": post, "waypoint_log": lines or wp_log.waypoint()}

    def bypass(self) -> Evidence:
        """legacy/client → echo, a POST: out of the mesh, so no waypoint on the way."""
        wp_log, logs = Logs(self.waypoint_log), self.zlogs()
        post = self.curl("legacy/client", ["http://echo.tour/tour/bypass"], "-X", "POST", "-d", "tour=bypass")
        ip = self.ip("legacy/client")
        until(lambda: [x for x in logs["w1"].ztunnel() if str(x.get("src.addr", "")).startswith(f"{ip}:")])
        return {"post": post, "client_ip": ip, "waypoint_log": wp_log.waypoint(),
                "w1_ztunnel": logs["w1"].ztunnel(), "w2_ztunnel": logs["w2"].ztunnel()}

    def identity(self) -> Evidence:
        """W1's ztunnel, with its own bootstrap credentials, asks the CA for S1's identity."""
        snap = ztunnel_snapshot(self.ctx.instance, "w1")
        return {"node": "w1", "ca": snap.ca.url,
                "bootstrap_cert": snap.bootstrap.cert,
                "asks_s1": ca_request(self.nodes["w1"], snap, "tour", "s1"),
                "asks_c1": ca_request(self.nodes["w1"], snap, "tour", "c1")}

    def metrics(self) -> Evidence:
        """The lab's Prometheus, once a scrape newer than the last step holds its series."""
        prom = Prometheus.of_lab(self.ctx.instance)
        # Prometheus scrapes each ztunnel on its own schedule: wait for each one's scrape
        # of its last step (W1: the bypass, received by echo's ztunnel; W2: the same-node
        # step, reported by both of its sides), so every series read below is complete and
        # an absent series is absent from a scrape taken after its step.
        for last in ('sum(istio_tcp_connections_opened_total{pod="ztunnel-w1",reporter="destination",'
                     'source_workload_namespace="legacy",destination_workload_namespace="tour"}) >= 1',
                     f'sum(istio_tcp_connections_opened_total{{pod="ztunnel-w2",source_workload="c3",'
                     f'destination_workload="s1"}}) >= {2 * N_SAME_NODE}'):
            wait_for_series(prom, last, timeout=PROM_TIMEOUT)

        def q(promql: str) -> list[dict[str, Any]]:
            return [{"metric": r["metric"], "value": float(r["value"][1])} for r in prom.query(promql)]

        opened = "istio_tcp_connections_opened_total"
        return {
            "out_of_mesh": q(f'{opened}{{destination_workload_namespace="legacy"}}'),
            "l4": q(f'sum by (reporter, source_workload, source_principal, destination_workload, '
                    f'destination_principal, connection_security_policy, pod) '
                    f'({opened}{{destination_workload="s1",source_workload=~"c1|c2"}})'),
            "same_node": q(f'sum by (reporter, source_workload, destination_workload, pod, node) '
                           f'({opened}{{source_workload="c3",destination_workload="s1"}})'),
            "s1_source_principals": q(f'sum by (source_principal) '
                                      f'({opened}{{reporter="destination",destination_workload="s1"}})'),
        }

    # -- the variants with a model of their own --------------------------------------------
    def deny(self) -> Evidence:
        """With a DENY on C2's principal at S1: C2 is reset, C1 is served."""
        logs = self.zlogs()
        with Wire(self.nodes["w2"], WIRE_PORTS, ifname=naming.NODE_IFNAME) as wire:
            c2 = self.curl("tour/c2", ["http://s1/tour/deny"])
            c1 = self.curl("tour/c1", ["http://s1/tour/deny"])
            w2 = until(lambda: len(logs["w2"].ztunnel()) >= 2 and logs["w2"].ztunnel())
        return {"c2": c2, "c1": c1, "client_ips": {c: self.ip(f"tour/{c}") for c in ("c1", "c2")},
                "s1": self.ip("tour/s1"), "w2_ztunnel": w2 or logs["w2"].ztunnel(),
                "w1_ztunnel": until(lambda: len(logs["w1"].ztunnel()) >= 2 and logs["w1"].ztunnel())
                or logs["w1"].ztunnel(),
                "wire": {"segments": _segments(wire)}}

    def split(self) -> Evidence:
        """C1 → echo, N requests on one keep-alive connection: the waypoint picks per request."""
        res = self.curl("tour/c1", ["http://echo/tour/split"] * N_SPLIT)
        return {"client": res, "n": N_SPLIT}


def ztunnel_snapshot(instance: str, node: str) -> ProxySnapshot:
    """The config W1's ztunnel was started with (its bootstrap files, the CA's URL)."""
    spec = next(s for s in processes.read_specs(instance) if s.name == f"ztunnel/{node}")
    return ProxySnapshot.load(spec.argv[spec.argv.index("--config") + 1])


def ca_request(netns: str, snap: ProxySnapshot, namespace: str, service_account: str) -> dict[str, Any]:
    """One real certificate request to the lab CA, over the network from the node's netns,
    authenticated with the node's ztunnel bootstrap certificate (what ztunnel itself uses)."""
    read = lambda p: Path(p).read_bytes()  # noqa: E731
    client = CertClient(snap.ca.url, read(snap.bootstrap.cert), read(snap.bootstrap.key),
                        read(snap.ca.root_cert), snap.trust_domain)
    asked = mesh.spiffe_uri(snap.trust_domain, namespace, service_account)
    with nsmod.entered(netns):  # the request's socket is made here, so it leaves from W1
        try:
            cert = asyncio.run(client.fetch(namespace, service_account))
        except CAError as e:
            return {"asked": asked, "status": e.status, "answer": e.text}
        except Exception as e:  # noqa: BLE001 - an unreachable CA is evidence too
            return {"asked": asked, "status": None, "answer": f"{type(e).__name__}: {e}"}
    return {"asked": asked, "status": 200, "answer": f"certificate for {cert.identity}"}
