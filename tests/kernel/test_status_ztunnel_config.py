"""`netlab status` and `netlab ztunnel-config` on a running ambient lab, judged against
the kernel and real clients: addresses in the namespaces, the certificate a TLS client
is actually served on 15008, and a process we kill ourselves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any, Callable

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.kernel
TOPOLOGY = REPO / "topologies" / "ambient-bookinfo.yaml"


def _status(lab: str, *args: str) -> dict[str, Any]:
    return json.loads(run_cli("status", lab, "--json", *args, check=True).stdout)


def _until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Wait for `check()` to return something true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_status_mesh_column_and_health_after_a_killed_process(up_lab: Callable[..., str]) -> None:
    lab = up_lab(TOPOLOGY)
    s = _status(lab)
    mesh = {f"{p['namespace']}/{p['name']}": p["mesh"] for p in s["pods"]}
    assert mesh["bookinfo/ratings-0"] == {"mode": "ambient",
                                          "reason": "namespace bookinfo has istio.io/dataplane-mode=ambient"}
    assert mesh["outside/sleep-0"]["mode"] == "none"
    # The column is the kernel's truth: an ambient pod has istio-cni's chains, an outside one none.
    for pod in s["pods"]:
        rules = subprocess.run(["ip", "netns", "exec", pod["netns"], "iptables-save", "-t", "nat"],
                               capture_output=True, text=True, check=True).stdout
        assert ("ISTIO_OUTPUT" in rules) == (pod["mesh"]["mode"] == "ambient"), pod["name"]
    assert [p["name"] for p in _status(lab, "-n", "outside")["pods"]] == ["sleep-0", "echo-0"]
    assert [p["name"] for p in _status(lab, "-l", "app in (ratings)")["pods"]] == ["ratings-0", "ratings-1"]

    zt = next(p for p in s["processes"] if p["name"] == "ztunnel/node-1")
    assert zt["state"] == "running" and zt["restarts"] == 0
    # The first ztunnel was started by `up`, not by the supervisor, which therefore cannot
    # read its exit status; the second one is its child, and its death is told exactly.
    for n in (1, 2):
        os.kill(zt["pid"], signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            now = next(p for p in _status(lab)["processes"] if p["name"] == "ztunnel/node-1")
            return now if now["restarts"] == n and now["state"] == "running" else None

        now = _until(f"the supervisor to restart ztunnel/node-1 ({n})", restarted)
        assert now["pid"] != zt["pid"] and os.path.exists(f"/proc/{now['pid']}")
        zt = now
    assert zt["lastExit"] == "killed by SIGKILL", zt
    assert _status(lab)["status"] == "ready"
    text = run_cli("status", lab, check=True).stdout
    row = next(line for line in text.splitlines() if "ztunnel/node-1" in line)
    assert "running" in row and "killed by SIGKILL" in row and " 2 " in row

    sup = next(p for p in _status(lab)["processes"] if p["name"] == "supervisor")
    os.kill(sup["pid"], signal.SIGKILL)  # nothing restarts anything now: the lab is degraded
    _until("status to say degraded", lambda: _status(lab)["status"] == "degraded")
    res = run_cli("status", lab)
    assert "supervisor" in res.stderr and "down" in res.stderr, res.stderr


def _served_serial(netns: str, ip: str) -> tuple[str, str]:
    """The serial and SAN of the certificate a TLS client is served on ip:15008 (openssl)."""
    hello = subprocess.run(["ip", "netns", "exec", netns, "openssl", "s_client", "-connect", f"{ip}:15008",
                            "-alpn", "h2"], input="", capture_output=True, text=True, timeout=30)
    cert = subprocess.run(["openssl", "x509", "-noout", "-serial", "-ext", "subjectAltName"],
                          input=hello.stdout, capture_output=True, text=True, check=True).stdout
    serial = cert.split("serial=", 1)[1].split()[0].lower()
    return serial, cert.split("URI:", 1)[1].split()[0]


def test_ztunnel_config_against_the_running_lab(up_lab: Callable[..., str]) -> None:
    lab = up_lab(TOPOLOGY)
    pods = {f"{p['namespace']}/{p['name']}": p for p in _status(lab)["pods"]}
    got = json.loads(run_cli("ztunnel-config", lab, "workloads", "--json", check=True).stdout)
    assert set(got) == {"node-1", "node-2"}
    for w in got["node-1"]:
        pod = pods[f"{w['namespace']}/{w['name']}"]
        addr = subprocess.run(["ip", "-n", pod["netns"], "-j", "-4", "addr", "show", "eth0"],
                              capture_output=True, text=True, check=True).stdout
        assert w["workloadIps"] == [json.loads(addr)[0]["addr_info"][0]["local"]]
        assert w["protocol"] == ("HBONE" if w["namespace"] == "bookinfo" else "TCP")

    ratings = pods["bookinfo/ratings-0"]
    client = pods["outside/sleep-0"]["netns"]
    serial, san = _served_serial(client, ratings["ip"])
    assert san == "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings"
    text = run_cli("ztunnel-config", lab, "certificates", "--node", ratings["node"], check=True).stdout
    row = next(line for line in text.splitlines() if san in line and " CA " in line)
    # openssl prints whole bytes (a leading 0 nibble survives); istioctl prints the
    # big integer with %x, so the two agree as numbers, not always as strings.
    cells = row.split()
    assert int(serial, 16) == int(cells[cells.index("CA") + 3], 16), text
    assert "Available" in cells and "true" in cells, text
    bad = run_cli("ztunnel-config", lab, "workloads", "--node", "node-9")
    assert bad.returncode == 2 and "node-1, node-2" in bad.stderr
