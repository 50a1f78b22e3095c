"""kill -9 of each kind of process a lab runs: it comes back, and so does the traffic.

The kubelet stand-in (netlab/kernel/supervisor.py) restarts what dies. Judged from
outside: the process table (a new pid, alive, in the same netns), `status --json`
(restart count, `degraded` while the process is down, `ready` after) and real
clients: curl from an ambient pod through both ztunnels and HBONE, and curl by DNS
name from a pod outside the mesh (the cluster DNS process answers it).

To see the `degraded` state at all (a restart takes milliseconds), the supervisor is
paused with SIGSTOP around the kill, and resumed once `status` has said `degraded`:
the state comes from the killed pid being gone, not from anything the supervisor says.
Waits are conditions with generous deadlines; no time is asserted.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.kernel
TOPO = REPO / "topologies" / "ambient-bookinfo.yaml"
DEADLINE = 60.0  # for a condition to come true on a loaded machine; never asserted as a time


def status(lab: str) -> dict[str, Any]:
    return json.loads(run_cli("status", lab, "--json", check=True).stdout)


def proc(lab: str, name: str) -> dict[str, Any]:
    return next(p for p in status(lab)["processes"] if p["name"] == name)


def wait_for(what: str, cond: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    delay = 0.05
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    raise AssertionError(f"never came true within {DEADLINE:g}s: {what}")


def curl_ok(lab: str, pod: str, url: str) -> bool:
    res = run_cli("exec", lab, pod, "--", "curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", url,
                  timeout=30)
    return res.returncode == 0 and res.stdout == "200"


def traffic_ok(lab: str) -> bool:
    """Several requests in a row (the VIP spreads over both ratings replicas and nodes),
    through the mesh and by a DNS name the cluster DNS answers."""
    return all(curl_ok(lab, "bookinfo/sleep", "http://ratings.bookinfo:9080/") for _ in range(4)) and \
        curl_ok(lab, "outside/sleep", "http://ratings.bookinfo.svc.cluster.local:9080/")


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    name = f"sv{os.getpid() % 1000}"
    try:
        run_cli("up", str(TOPO), "--name", name, check=True)
        yield name
    finally:
        if os.path.isdir(f"/run/netlab/{name}"):
            run_cli("down", name)


# The CA first: the ztunnel killed after it must fetch its certificates again from the
# restarted CA, so traffic through it proves the CA serves again.
KINDS = ["istiod-ca", "ztunnel/node-1", "ztunnel/node-2", "dns", "app/bookinfo/ratings-0/ratings"]


@pytest.mark.parametrize("name", KINDS)
def test_kill_9_heals_and_traffic_recovers(lab: str, name: str) -> None:
    assert wait_for("the lab is ready before the kill", lambda: status(lab)["status"] == "ready")
    before = proc(lab, name)
    supervisor = proc(lab, "supervisor")
    assert before["alive"] and supervisor["alive"]
    os.kill(supervisor["pid"], signal.SIGSTOP)
    try:
        os.kill(before["pid"], signal.SIGKILL)
        down = wait_for(f"{name} reported down", lambda: (s := status(lab))["status"] == "degraded" and s)
        entry = next(p for p in down["processes"] if p["name"] == name)
        assert entry["state"] == "down" and not entry["alive"] and entry["restarts"] == before["restarts"]
        listed = next(r for r in json.loads(run_cli("list", "--json", check=True).stdout) if r["name"] == lab)
        assert listed["status"] == "degraded", "list must tell the state status tells"
    finally:
        os.kill(supervisor["pid"], signal.SIGCONT)
    after = wait_for(f"{name} restarted and running",
                     lambda: (p := proc(lab, name))["state"] == "running" and p["alive"] and p)
    assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"] + 1
    assert after["lastExit"] == "killed by SIGKILL" or after["lastExit"].startswith("exited")
    assert after["netns"] == before["netns"]
    assert wait_for("the lab is ready again", lambda: status(lab)["status"] == "ready")
    assert wait_for("traffic through the mesh and the cluster DNS recovers", lambda: traffic_ok(lab))
    listed = next(r for r in json.loads(run_cli("list", "--json", check=True).stdout) if r["name"] == lab)
    assert listed["status"] == "ready" and listed["restarts"] >= 1
