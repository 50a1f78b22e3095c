"""`netlab bench topology`: time up and down of N nodes and P pods, beside Mininet.

Both are measured in the same run on the same machine, so the ratio means something
even on a noisy VM. Mininet's baseline is its own CLI with a Linux-bridge switch and
no controller, building P hosts on one switch and tearing them down (`--test none`).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from typing import Any, Callable

from netlab.errors import BenchError
from netlab.kernel import lifecycle
from netlab.model import Container, Deployment, Lab, Namespace, Node

Say = Callable[[str], None]


def scale_lab(name: str, nodes: int, pods: int) -> Lab:
    """Idle pods spread evenly: the network build, not app start-up, is what's timed."""
    lab = Lab(name=name, nodes=[Node(f"node-{i + 1}") for i in range(nodes)], files=["<bench>"],
              namespaces=[Namespace("bench")])
    per, extra = divmod(pods, nodes)
    for i in range(nodes):
        n = per + (1 if i < extra else 0)
        if n:
            lab.deployments.append(Deployment("bench", f"p{i + 1}", n, "default", {"app": f"p{i + 1}"}, {},
                                              [Container("c", "netlab/sleep")], node_name=f"node-{i + 1}"))
    return lab


def time_netlab(nodes: int, pods: int) -> tuple[float, float]:
    """(up, down) seconds: up from the model (planning included) to every process ready."""
    lab = scale_lab(f"bench{os.getpid() % 10000}", nodes, pods)
    started = time.perf_counter()
    lifecycle.up(lab)
    up = time.perf_counter() - started
    down = lifecycle.down(lab.name)
    return up, down


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


def run(nodes: int, pods: int, runs: int, vs_mininet: bool, say: Say) -> dict[str, Any]:
    ups, downs = [], []
    for i in range(runs):
        u, d = time_netlab(nodes, pods)
        say(f"netlab run {i + 1}/{runs}: up {u:.3f}s down {d:.3f}s")
        ups.append(u)
        downs.append(d)
    rows = [{"what": f"netlab {nodes} nodes / {pods} pods", "up": statistics.median(ups),
             "down": statistics.median(downs)}]
    result: dict[str, Any] = {"nodes": nodes, "pods": pods, "runs": runs, "rows": rows,
                              "netlab": {"up": ups, "down": downs}}
    if vs_mininet:
        totals = []
        for i in range(runs):
            u, d = time_mininet(pods)
            say(f"mininet run {i + 1}/{runs}: {u + d:.2f}s (up+down)")
            totals.append((u, d))
        mu = statistics.median(t[0] for t in totals)
        md = statistics.median(t[1] for t in totals)
        rows.append({"what": f"mininet single,{pods} (lxbr, no controller)", "up": mu, "down": md})
        result["mininet"] = {"total": [u + d for u, d in totals]}
        result["ratio_vs_mininet"] = statistics.median(u + d for u, d in totals) / (rows[0]["up"] + rows[0]["down"])
    return result
