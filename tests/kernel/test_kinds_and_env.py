"""Pod, StatefulSet, ConfigMap and `env:` on the real kernel.

Evidence: the process' own environment as the kernel holds it (/proc/<pid>/environ, so
the container runs a `command:`, which is exec'd; netlab's built-in apps fork from a
pre-imported interpreter, whose /proc environ is the interpreter's own),
also after the supervisor restarted it; where status says the StatefulSet's pods run
(one per zone under a DoNotSchedule zone constraint), and `netlab up`'s note for the
ConfigMap it ignores; a curl to the Pod through its Service.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.kernel
TOPO = Path(__file__).parent / "topologies" / "kinds-and-env.yaml"


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_env_kinds_and_the_configmap_note(lab_name: str) -> None:
    res = run_cli("up", str(TOPO), "--name", lab_name)
    try:
        assert res.returncode == 0, res.stderr
        assert "note: ConfigMap default/settings is accepted and ignored" in res.stderr
        status = json.loads(run_cli("status", lab_name, "--json", check=True).stdout)
        pods = {p["name"]: p for p in status["pods"]}
        assert pods["greeter"]["node"] == "node-2"
        assert {pods["db-0"]["node"], pods["db-1"]["node"]} == {"node-1", "node-2"}
        app = next(p for p in status["processes"] if p["name"] == "app/default/greeter/echo")
        assert environ(app["pid"])["GREETING"] == "hello from env"
        res = run_cli("exec", lab_name, "db-0", "--", "curl", "-sS", "-m", "5", "-o", "/dev/null",
                      "-w", "%{http_code}", "http://greeter/")
        assert res.returncode == 0 and res.stdout == "200", res.stderr
        # The restarted process gets the same environment.
        os.kill(app["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = next(p for p in json.loads(run_cli("status", lab_name, "--json", check=True).stdout)["processes"]
                       if p["name"] == app["name"])
            if now["pid"] != app["pid"] and now["state"] == "running":
                break
            time.sleep(0.1)
        assert now["pid"] != app["pid"] and now["restarts"] == 1
        assert environ(now["pid"])["GREETING"] == "hello from env"
    finally:
        if os.path.isdir(f"/run/netlab/{lab_name}"):
            run_cli("down", lab_name)
