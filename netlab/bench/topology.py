"""`netlab bench topology`: time up and down of a meshed lab, beside Mininet and the netlink floor.

What is timed is what users build: P pods on K nodes in 5 namespaces, N of them
`netlab/http-echo` servers behind one Service per namespace, the rest idle, plus one
client pod. `up` is `netlab.kernel.lifecycle.up(lab)` from the model (planning
included) until every process said ready; then a real client in the client pod
(`netlab.bench.probe`) asks every server by its pod IP and every Service by its DNS
name, through the mesh, and the time until all answered is `serve`; then `down`.

Beside it, in the same run on the same machine (so a ratio means something even on a
noisy VM):
- Mininet's own API with a Linux-bridge switch and no controller, building P hosts on
  one switch and tearing them down (`mn --switch lxbr --controller none --topo single,P
  --test none`, timed around start() and stop());
- the raw netlink floor (netlab.kernel.floor): P namespaces, veths and addresses made
  in-process with one netlink socket per namespace, and removed.

Memory is the PSS of every process the lab runs (/proc/<pid>/smaps_rollup), measured
after the client's requests were served.

Every timed build (netlab's, the floor's, Mininet's) starts once the machine is as idle
as it was before the bench began (bench/quiet.py): the kernel goes on freeing a torn-down
lab's namespaces after `down` returns, and that work belongs to no figure.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from netlab import mesh as meshdefs
from netlab.bench import memory
from netlab.bench.quiet import Quiet
from netlab.errors import BenchError, NetlabError
from netlab.kernel import floor, lifecycle, processes, query
from netlab.kernel.ownership import LabRecord
from netlab.model import Container, ContainerPort, Deployment, Lab, Namespace, Node, Service, ServicePort

Say = Callable[[str], None]

MESHES = ("ambient", "sidecar", "none")
NAMESPACES = 5  # as the lab: 5 namespaces, one Service each
ECHO_PORT = 8080
SERVICE_PORT = 80
CURVE_PODS = (50, 100, 200, 500, 1000)
CURVE_REFERENCE = 200  # the curve's per-pod cost is compared with its value here
PROBE_TIMEOUT = 10.0
_serial = itertools.count()


# -- the lab ------------------------------------------------------------------------------


def mesh_unavailable(mesh: str) -> str | None:
    """Why `mesh` cannot be benched here, or None. A mode not yet registered is not built."""
    if mesh not in MESHES:
        return f"unknown mesh {mesh!r}: use one of {', '.join(MESHES)}"
    if mesh == "none":
        return None
    from netlab.plan.modes import REGISTRY

    if mesh not in REGISTRY:
        return f"the {mesh} mesh mode is not built yet, so `--mesh {mesh}` cannot be benched"
    return None


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible, larger shares first."""
    per, extra = divmod(total, parts)
    return [per + (1 if i < extra else 0) for i in range(parts)]


def namespace_name(i: int) -> str:
    return f"bench-{i}"


def mesh_lab(name: str, mesh: str, servers: int, pods: int, nodes: int) -> Lab:
    """P pods in 5 namespaces: N echo servers behind one Service per namespace, one client
    pod (when there are servers to ask), the rest idle. Spread over the nodes by the
    planner's scheduler stand-in (least-loaded first)."""
    client = 1 if servers else 0
    if servers < 0 or pods < servers + client:
        raise BenchError(f"{pods} pods cannot hold {servers} servers"
                         f"{' and a client pod' if client else ''}: use --pods ≥ {servers + client}")
    labels: dict[str, str] = {}
    profile = "ambient"
    if mesh == "ambient":
        labels = {meshdefs.DATAPLANE_MODE_LABEL: "ambient"}
    elif mesh == "sidecar":
        labels = {meshdefs.INJECTION_LABEL: "enabled"}
        profile = "default"
    lab = Lab(name=name, nodes=[Node(f"node-{i + 1}") for i in range(nodes)], files=["<bench>"],
              istio_profile=profile,  # type: ignore[arg-type]
              namespaces=[Namespace(namespace_name(i), dict(labels)) for i in range(NAMESPACES)])
    idle = pods - servers - client
    for i, (n_servers, n_idle) in enumerate(zip(split(servers, NAMESPACES), split(idle, NAMESPACES))):
        ns = namespace_name(i)
        if n_servers:
            lab.deployments.append(Deployment(
                ns, "echo", n_servers, "default", {"app": "echo"}, {},
                [Container("echo", "netlab/http-echo", ports=[ContainerPort(ECHO_PORT, "http")])]))
            lab.services.append(Service(ns, "echo", [ServicePort(SERVICE_PORT, "http", "http")],
                                        {"app": "echo"}))
        if n_idle:
            lab.deployments.append(Deployment(ns, "idle", n_idle, "default", {"app": "idle"}, {},
                                              [Container("idle", "netlab/sleep")]))
    if client:
        lab.deployments.append(Deployment(namespace_name(0), "client", 1, "default", {"app": "client"}, {},
                                          [Container("client", "netlab/sleep")]))
    return lab


# -- one netlab run -----------------------------------------------------------------------


@dataclass
class LabRun:
    up: float
    serve: float  # after `up`: until every server and Service answered the client
    down: float
    memory: memory.MemoryFigures
    requests: int  # the client's requests, all answered
    mesh_connections: int | None  # inbound connections ztunnels counted (ambient), else None


def probe_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Every echo server by pod IP (it must answer itself), every Service by DNS name
    (one of its endpoints must answer)."""
    pods = {(p["namespace"], p["name"]): p for p in summary["pods"]}
    targets = [{"host": p["ip"], "port": ECHO_PORT, "servers": [p["name"]]}
               for p in summary["pods"] if p["deployment"] == "echo"]
    for s in summary["services"]:
        port = s["ports"][0]
        names = [pods[tuple(e["pod"].split("/", 1))]["name"] for e in port["endpoints"]
                 if tuple(e["pod"].split("/", 1)) in pods]
        targets.append({"host": s["fqdn"], "port": port["port"], "servers": names})
    return targets


def run_probe(record: LabRecord, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """The client, run to completion in the client pod with the pod's resolv.conf."""
    pod = query.find_pod(record, f"{namespace_name(0)}/client")
    request = json.dumps({"targets": targets, "timeout": PROBE_TIMEOUT, "tries": 3})
    res = processes.run_in(pod["netns"], [sys.executable, "-m", "netlab.bench.probe"],
                           query.pod_resolv_conf(record, pod), input=request, capture_output=True,
                           text=True, timeout=PROBE_TIMEOUT * 3 + len(targets))
    try:
        result = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"the bench client failed in {pod['namespace']}/{pod['name']}: "
                         f"{(res.stderr or res.stdout)[-500:]}") from None
    if result["failed"]:
        first = result["failed"][0]
        raise BenchError(f"{len(result['failed'])} of {len(targets)} targets did not answer through "
                         f"the mesh; first: {first['target']}: {first['error']}")
    return result


def mesh_connections(record: LabRecord) -> int:
    """Inbound connections every ztunnel counted (reporter=destination): the requests
    went through the mesh, in the mesh's own words."""
    from netlab.observe.metrics import scrape

    total = 0
    for node in record.summary["nodes"]:
        try:
            text = scrape(node["netns"])
        except (OSError, NetlabError):
            continue  # a node without meshed pods runs no ztunnel
        for line in text.splitlines():
            if line.startswith("istio_tcp_connections_opened_total{") and 'reporter="destination"' in line:
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


def lab_memory(record: LabRecord) -> memory.MemoryFigures:
    """PSS of every live process the lab runs; the servers' own apart."""
    everything, servers = [], []
    for p in record.processes:
        if not processes.is_ours(p):
            continue
        kib = memory.pss_kib(p.pid)
        if kib is None:
            continue
        everything.append(kib)
        if p.name.startswith("app/") and "/echo-" in p.name:
            servers.append(kib)
    return memory.figures(everything, servers, len(record.summary["pods"]))


def time_lab(mesh: str, servers: int, pods: int, nodes: int) -> LabRun:
    name = f"bt{os.getpid() % 10000}n{next(_serial)}"
    lab = mesh_lab(name, mesh, servers, pods, nodes)
    started = time.perf_counter()
    lifecycle.up(lab)
    up = time.perf_counter() - started
    try:
        record = query.record_of(name)
        targets = probe_targets(record.summary)
        t = time.perf_counter()
        if targets:
            run_probe(record, targets)
        serve = time.perf_counter() - t
        mem = lab_memory(record)
        seen = mesh_connections(record) if mesh == "ambient" and targets else None
        if seen is not None and seen < len(targets):
            raise BenchError(f"the ztunnels counted {seen} inbound connections for {len(targets)} "
                             "requests: the client's requests did not all go through the mesh")
    finally:
        down = lifecycle.down(name)
    return LabRun(up, serve, down, mem, len(targets), seen)


# -- baselines ----------------------------------------------------------------------------

MININET_SCRIPT = """
import json, sys, time
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge
from mininet.topo import SingleSwitchTopo
setLogLevel("error")
n = int(sys.argv[1])
t0 = time.perf_counter()
net = Mininet(topo=SingleSwitchTopo(k=n), switch=LinuxBridge, controller=None)
net.start()
t1 = time.perf_counter()
net.stop()
t2 = time.perf_counter()
print(json.dumps({"up": t1 - t0, "down": t2 - t1}))
"""


def time_mininet(hosts: int) -> tuple[float, float]:
    """Mininet's own API, timed around start() and stop(): the same work as
    `mn --switch lxbr --controller none --topo single,N --test none`, split by phase."""
    if not shutil.which("mn"):
        raise BenchError("Mininet is not installed (Debian package `mininet`; `make setup` installs it)")
    res = subprocess.run(["/usr/bin/python3", "-c", MININET_SCRIPT, str(hosts)],
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        subprocess.run(["mn", "-c"], capture_output=True)  # Mininet's own cleanup of its objects
        raise BenchError(f"mininet failed: {res.stderr[-500:]}")
    times = json.loads(res.stdout.strip().splitlines()[-1])
    return times["up"], times["down"]


def time_floor(hosts: int) -> tuple[float, float]:
    f = floor.build(f"bf{os.getpid() % 10000}n{next(_serial)}", hosts)
    return f.up, f.down


# -- arithmetic (pure) --------------------------------------------------------------------


def per_pod_ms(up: float, down: float, pods: int) -> float:
    """What one pod costs, up plus down, in milliseconds."""
    return (up + down) / pods * 1000 if pods else 0.0


def deviations(costs: dict[int, float], reference: int = CURVE_REFERENCE) -> dict[int, float]:
    """Each size's per-pod cost relative to the reference size's: +0.25 is 25% dearer."""
    ref = costs.get(reference)
    if not ref:
        return {}
    return {pods: cost / ref - 1 for pods, cost in costs.items()}


def ratio(baseline: float, ours: float) -> float:
    """How many times `ours` fits in `baseline` (> 1: we are faster)."""
    return baseline / ours if ours > 0 else float("inf")


def median_pair(pairs: list[tuple[float, float]]) -> dict[str, float]:
    return {"up": statistics.median(p[0] for p in pairs), "down": statistics.median(p[1] for p in pairs)}


# -- the commands -------------------------------------------------------------------------


WARMUP_PODS = 4


def warm_up(mesh: str, nodes: int, say: Say) -> dict[str, float]:
    """Build and remove a small lab of the same mesh, untimed in the figures.

    Why: the first build in a process also starts netlab's process zygote and its
    imports (kernel/zygote.py), and the first in a boot loads the kernel's veth, bridge
    and nf_tables modules. Mininet is timed after its imports too (MININET_SCRIPT).
    Without this, whichever size is measured first carries those once-only costs, and
    a per-pod curve is not comparable across sizes. The cold figures are printed."""
    r = time_lab(mesh, WARMUP_PODS // 2, WARMUP_PODS, nodes)
    say(f"warm-up (untimed): a cold {WARMUP_PODS}-pod lab took up {r.up:.2f}s, down {r.down:.2f}s "
        "(once per netlab command: the process zygote's start and imports)")
    return {"pods": WARMUP_PODS, "up": r.up, "down": r.down}


def run(mesh: str, servers: int, pods: int, nodes: int, runs: int, vs_mininet: bool,
        say: Say) -> dict[str, Any]:
    """`runs` builds of the lab, the floor each time, Mininet too when asked; medians."""
    why = mesh_unavailable(mesh)
    if why:
        raise BenchError(why)
    mesh_lab("check", mesh, servers, pods, nodes)  # a size that cannot be built fails here, not after the warm-up
    quiet = Quiet.measure()
    cold = warm_up(mesh, nodes, say)
    labs: list[LabRun] = []
    floors: list[tuple[float, float]] = []
    minis: list[tuple[float, float]] = []
    for i in range(runs):
        quiet.wait()  # each build on a machine done with the last one (bench/quiet.py)
        r = time_lab(mesh, servers, pods, nodes)
        say(f"netlab run {i + 1}/{runs}: up {r.up:.2f}s, all {r.requests} answered after "
            f"{r.serve:.2f}s, down {r.down:.2f}s, PSS {r.memory.total_kib / 1024:.0f} MiB")
        labs.append(r)
        quiet.wait()
        floors.append(time_floor(pods))
        say(f"netlink floor run {i + 1}/{runs}: up {floors[-1][0]:.2f}s down {floors[-1][1]:.2f}s")
        if vs_mininet:
            quiet.wait()
            minis.append(time_mininet(pods))
            say(f"mininet run {i + 1}/{runs}: up {minis[-1][0]:.2f}s down {minis[-1][1]:.2f}s")
    ours = {"up": statistics.median(r.up for r in labs), "serve": statistics.median(r.serve for r in labs),
            "down": statistics.median(r.down for r in labs)}
    mem = labs[len(labs) // 2].memory
    result: dict[str, Any] = {
        "mesh": mesh, "nodes": nodes, "pods": pods, "servers": servers, "runs": runs, "warm_up": cold,
        "netlab": {**ours, "runs": [{"up": r.up, "serve": r.serve, "down": r.down} for r in labs],
                   "requests": labs[0].requests, "mesh_connections": labs[0].mesh_connections,
                   "per_pod_ms": per_pod_ms(ours["up"], ours["down"], pods)},
        "memory": mem.as_dict(),
        "floor": {**median_pair(floors), "runs": [{"up": u, "down": d} for u, d in floors]},
    }
    total = ours["up"] + ours["down"]
    fl = result["floor"]
    result["ratios"] = {"netlab_vs_floor": {"up": ours["up"] / fl["up"], "down": ours["down"] / fl["down"],
                                            "total": total / (fl["up"] + fl["down"])}}
    if vs_mininet:
        mn = median_pair(minis)
        result["mininet"] = {**mn, "runs": [{"up": u, "down": d} for u, d in minis]}
        result["ratios"]["faster_than_mininet"] = {"up": ratio(mn["up"], ours["up"]),
                                                   "down": ratio(mn["down"], ours["down"]),
                                                   "total": ratio(mn["up"] + mn["down"], total)}
    return result


def curve(mesh: str, nodes: int, sizes: tuple[int, ...], runs: int, say: Say) -> dict[str, Any]:
    """`runs` builds per size, half of the pods echo servers, and the floor beside each;
    medians, and each size's per-pod cost against 200 pods'.

    Why medians: at 50 pods a lab is up in ~0.4 s, so a 50 ms hiccup moves its per-pod
    cost by 12%. Each build waits for the machine to be done with the last one
    (bench/quiet.py): the kernel frees a 1,000-pod teardown's namespaces for a second
    after it."""
    why = mesh_unavailable(mesh)
    if why:
        raise BenchError(why)
    quiet = Quiet.measure()
    cold = warm_up(mesh, nodes, say)
    builds: dict[int, list[LabRun]] = {pods: [] for pods in sizes}
    floors: dict[int, list[tuple[float, float]]] = {pods: [] for pods in sizes}
    for pods in sorted(sizes):
        for i in range(runs):
            quiet.wait()  # each build on a machine done with the last one (bench/quiet.py)
            r = time_lab(mesh, pods // 2, pods, nodes)
            builds[pods].append(r)
            quiet.wait()
            floors[pods].append(time_floor(pods))
            fu, fd = floors[pods][-1]
            say(f"{pods} pods, run {i + 1}/{runs}: up {r.up:.2f}s down {r.down:.2f}s, "
                f"{per_pod_ms(r.up, r.down, pods):.1f} ms/pod; floor {fu + fd:.2f}s")
    rows = []
    for pods in sizes:
        up = statistics.median(r.up for r in builds[pods])
        down = statistics.median(r.down for r in builds[pods])
        floor_ = median_pair(floors[pods])
        fu, fd = floor_["up"], floor_["down"]
        rows.append({"pods": pods, "servers": pods // 2, "up": up,
                     "serve": statistics.median(r.serve for r in builds[pods]), "down": down,
                     "per_pod_ms": per_pod_ms(up, down, pods), "floor_up": fu, "floor_down": fd,
                     "vs_floor": (up + down) / (fu + fd),
                     "memory": builds[pods][len(builds[pods]) // 2].memory.as_dict(),
                     "runs": [{"up": r.up, "serve": r.serve, "down": r.down} for r in builds[pods]]})
    devs = deviations({r["pods"]: r["per_pod_ms"] for r in rows})
    for row in rows:
        row["vs_reference"] = devs.get(row["pods"])
    return {"mesh": mesh, "nodes": nodes, "runs": runs, "reference": CURVE_REFERENCE, "warm_up": cold,
            "rows": rows}
