"""The foundation on the real kernel: build, reach, resolve, tear down, leave nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import NETLAB, REPO, run_cli
from tests.kernel.hoststate import snapshot
from tests.kernel.leftovers import Owned, leftovers, owned

pytestmark = pytest.mark.kernel
BOOKINFO = REPO / "topologies" / "bookinfo.yaml"
EXTRA = Path(__file__).parent / "topologies"
EXITS_AT_ONCE = EXTRA / "exits-at-once.yaml"  # with BOOKINFO: `up` fails after building
NEVER_LISTENS = EXTRA / "never-listens.yaml"  # with BOOKINFO: `up` waits, a window to interrupt


def netns_with_prefix(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def status(lab: str) -> dict:
    return json.loads(run_cli("status", lab, "--json", check=True).stdout)


def pexec(lab: str, pod: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return run_cli("exec", lab, pod, "--", *cmd, timeout=timeout)


def curl_json(lab: str, pod: str, url: str) -> dict:
    res = pexec(lab, pod, "curl", "-sS", "-m", "5", url)
    assert res.returncode == 0, f"curl {url} from {pod}: rc={res.returncode} {res.stderr}"
    return json.loads(res.stdout)


def assert_nothing_left(lab: str, snapshot: Owned | None = None) -> None:
    """No netns, no state, no process of `lab` (see leftovers.py for how processes are found)."""
    left = leftovers(lab, snapshot)
    assert left == [], f"lab {lab} left behind:\n" + "\n".join(left)


def test_pods_reach_each_other_across_nodes_and_see_real_client_ip(up_lab) -> None:
    lab = up_lab(BOOKINFO)
    s = status(lab)
    sleep = next(p for p in s["pods"] if p["deployment"] == "sleep")
    ratings = [p for p in s["pods"] if p["deployment"] == "ratings"]
    assert {p["node"] for p in ratings} == {"node-1", "node-2"}, "replicas should spread over nodes"
    for target in ratings:
        body = curl_json(lab, "sleep", f"http://{target['ip']}:9080/hello")
        assert body["path"] == "/hello"
        # The app saw the client's own pod IP: no NAT on the pod-to-pod path.
        assert body["peer"].rsplit(":", 1)[0] == sleep["ip"]


def test_service_vip_spreads_over_replicas_and_dns_names_resolve(up_lab) -> None:
    lab = up_lab(BOOKINFO)
    s = status(lab)
    svc = next(x for x in s["services"] if x["name"] == "ratings")
    servers = set()
    for _ in range(30):
        servers.add(curl_json(lab, "sleep", f"http://{svc['clusterIP']}:9080/")["server"])
        if len(servers) == 2:
            break
    assert len(servers) == 2, f"30 requests to the VIP all went to {servers}"
    ns = svc["namespace"]
    for name in (f"ratings.{ns}.svc.cluster.local", f"ratings.{ns}", "ratings"):
        body = curl_json(lab, "sleep", f"http://{name}:9080/dns")
        assert body["host"] == f"{name}:9080"
    # A different client library than curl: Python's resolver in the pod.
    res = pexec(lab, "sleep", "python3", "-c",
                "import socket; print(socket.gethostbyname('ratings'))")
    assert res.stdout.strip() == svc["clusterIP"], res.stderr


def test_exec_propagates_exit_code_and_uses_pod_resolv_conf(up_lab) -> None:
    lab = up_lab(BOOKINFO)
    assert pexec(lab, "sleep", "false").returncode == 1
    conf = pexec(lab, "sleep", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.96.0.10" in conf and "svc.cluster.local" in conf
    assert "nameserver 10.96.0.10" not in Path("/etc/resolv.conf").read_text()
    links = pexec(lab, "sleep", "ip", "-o", "link").stdout
    assert "eth0" in links and "nlp" not in links  # only the pod's own interfaces
    bad = pexec(lab, "no-such-pod", "true")
    assert bad.returncode == 2 and "no pod" in bad.stderr


def test_down_leaves_nothing_and_host_is_unchanged(lab_name: str) -> None:
    before = snapshot()
    try:
        run_cli("up", str(BOOKINFO), "--name", lab_name, check=True)
        assert len(netns_with_prefix(f"nl-{lab_name}-")) >= 5
        built = owned(lab_name)
        assert built.processes and built.netns
    finally:
        res = run_cli("down", lab_name)
    assert res.returncode == 0, res.stderr
    assert_nothing_left(lab_name, built)
    assert snapshot() == before


def test_failing_build_rolls_back(lab_name: str) -> None:
    res = run_cli("up", str(BOOKINFO), str(EXITS_AT_ONCE), "--name", lab_name)
    assert res.returncode == 2, res.stderr
    assert "exited before listening" in res.stderr and "Traceback" not in res.stderr
    assert_nothing_left(lab_name)


def _up_until_building(lab: str) -> tuple[subprocess.Popen, Owned]:
    """Start `netlab up` on a build that waits forever, and return once every namespace
    and process is in place, with what the lab owns at that moment."""
    proc = subprocess.Popen([NETLAB, "up", str(BOOKINFO), str(NEVER_LISTENS), "--name", lab],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        return proc, _wait_building(lab)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _wait_building(lab: str, timeout: float = 20) -> Owned:
    """Wait until `up` has started the stuck pod's process (the last of the lab's)."""
    state = Path(f"/run/netlab/{lab}/state.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            names = [p["name"] for p in json.loads(state.read_text())["processes"]]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            names = []
        if any("stuck" in n for n in names):
            return owned(lab)
        time.sleep(0.05)
    raise AssertionError("netlab up never got as far as starting the stuck pod's process")


def test_sigkill_during_up_then_clean_removes_everything(lab_name: str) -> None:
    proc, building = _up_until_building(lab_name)
    proc.kill()
    proc.wait(10)
    try:
        assert netns_with_prefix(f"nl-{lab_name}-"), "the kill should have left namespaces behind"
        row = next(r for r in json.loads(run_cli("list", "--json", check=True).stdout) if r["name"] == lab_name)
        assert row["status"] == "crashed"
        assert status(lab_name)["status"] == "crashed", "list and status must tell the same state"
        res = run_cli("clean", lab_name)
        assert res.returncode == 0 and lab_name in res.stderr, res.stderr
        assert_nothing_left(lab_name, building)
    finally:
        if os.path.isdir(f"/run/netlab/{lab_name}"):
            run_cli("clean", lab_name)


def test_clean_with_a_lab_name_touches_only_that_lab(lab_name: str, up_lab) -> None:
    """Two crashed labs and a running one: `clean A` removes A alone."""
    other = lab_name + "o"
    running = up_lab(EXTRA / "no-processes.yaml", lab_name + "r")
    procs = []
    try:
        for name in (lab_name, other):
            proc, _ = _up_until_building(name)
            proc.kill()
            proc.wait(10)
            procs.append(proc)
        res = run_cli("clean", lab_name)
        assert res.returncode == 0, res.stderr
        assert_nothing_left(lab_name)
        assert status(other)["status"] == "crashed", "the other crashed lab must be left alone"
        assert status(running)["status"] == "ready"
        refused = run_cli("clean", running)
        assert refused.returncode == 2 and "has not crashed" in refused.stderr
        assert status(running)["status"] == "ready"
    finally:
        for name in (lab_name, other):
            if os.path.isdir(f"/run/netlab/{name}"):
                run_cli("clean", name)


def test_ctrl_c_during_up_rolls_back(lab_name: str) -> None:
    """The rollback alone must remove everything: checked before any cleanup of ours runs."""
    proc, building = _up_until_building(lab_name)
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, err
        assert_nothing_left(lab_name, building)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.isdir(f"/run/netlab/{lab_name}"):
            run_cli("down", lab_name)  # only after the check: a broken rollback must fail it


def test_two_labs_side_by_side(up_lab, lab_name: str) -> None:
    a = up_lab(BOOKINFO, lab_name + "a")
    b = up_lab(BOOKINFO, lab_name + "b")
    for lab in (a, b):
        assert curl_json(lab, "sleep", "http://ratings:9080/")["method"] == "GET"
    run_cli("down", a, check=True)
    assert_nothing_left(a)
    assert curl_json(b, "sleep", "http://ratings:9080/")["method"] == "GET"


def test_second_up_with_same_name_is_refused(up_lab) -> None:
    lab = up_lab(BOOKINFO)
    res = run_cli("up", str(BOOKINFO), "--name", lab)
    assert res.returncode == 2 and "already exists" in res.stderr
    assert status(lab)["status"] == "ready"
