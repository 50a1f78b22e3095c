"""The built-in image netlab/prometheus: accepted by the loader, planned as Debian's binary
under the addon's launcher, its config judged by Debian's `promtool check config`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from netlab import topology
from netlab.plan import prometheus_app
from netlab.plan.planner import PlanOptions, plan
from netlab.telemetry import prometheus_process

LAB = """\
apiVersion: netlab.dev/v1alpha1
kind: Lab
metadata: {name: promapp}
spec:
  nodes: [{name: node-1}]
---
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: prometheus, namespace: monitoring}
spec:
  selector: {matchLabels: {app: prometheus}}
  template:
    metadata: {labels: {app: prometheus}}
    spec:
      containers:
        - name: prometheus
          image: netlab/prometheus
          PORTS
"""


def _proc(tmp_path: Path, ports: str = "", args: str = ""):  # type: ignore[no-untyped-def]
    f = tmp_path / "lab.yaml"
    f.write_text(LAB.replace("PORTS", ports + ("\n          " + args if args else "")))
    state = plan(topology.load([f]), PlanOptions(python="/venv/python"))
    (proc,) = [p for p in state.processes if p.name.startswith("app/")]
    return proc


def test_default_port_9090_under_the_launcher(tmp_path: Path) -> None:
    proc = _proc(tmp_path)
    assert proc.name == "app/monitoring/prometheus-0/prometheus"
    assert proc.argv == ("/venv/python", "-m", "netlab.telemetry.prometheus_process",
                         "--binary", "/usr/bin/prometheus", "--config", "{config}",
                         "--storage", "/run/netlab/promapp/apps/monitoring/prometheus-0/prometheus/prometheus",
                         "--listen", "0.0.0.0:9090")
    assert proc.signals_ready and [(r.netns, r.port) for r in proc.ready] == [(proc.netns, 9090)]


def test_declared_port_and_args_reach_prometheus(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "ports: [{containerPort: 9091, name: http-web}]",
                 'args: ["--query.timeout=10s"]')
    assert proc.argv[-4:] == ("--listen", "0.0.0.0:9091", "--", "--query.timeout=10s")


def test_the_launcher_passes_what_follows_the_dashes(tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "prometheus"
    fake.write_text('#!/bin/sh\necho "ARGS: $*"\nexit 3\n')
    fake.chmod(0o755)
    (tmp_path / "c.json").write_text(prometheus_app.config())
    rc = prometheus_process.main(["--binary", str(fake), "--config", str(tmp_path / "c.json"),
                                  "--storage", str(tmp_path / "s"), "--listen", "127.0.0.1:1",
                                  "--", "--query.timeout=10s"])
    out = capfd.readouterr().out
    assert rc == 1 and "exited with 3 before it was ready" in out
    assert (f"ARGS: --config.file={tmp_path / 'c.json'} --storage.tsdb.path={tmp_path / 's'} "
            "--web.listen-address=127.0.0.1:1 --query.timeout=10s") in out


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian's promtool is not installed")
def test_promtool_accepts_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(prometheus_app.config())
    res = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_a_missing_binary_is_one_plain_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = prometheus_process.main(["--binary", str(tmp_path / "nope"), "--config", "c", "--storage",
                                  str(tmp_path / "s"), "--listen", "127.0.0.1:1", "--", "--x"])
    assert rc == 1 and "apt-get install -y prometheus" in capsys.readouterr().out
