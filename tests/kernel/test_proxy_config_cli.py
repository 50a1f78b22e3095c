"""`netlab proxy-config` on a running lab: the tables a user sees for a real sidecar, and
one clear error for a pod without one. The rows are judged against istioctl 1.24's shape
(docs/sidecar.md), and the lab's own kernel state: the VIP in the table is the one
kube-proxy's rules DNAT, the endpoint is the pod's address as `netlab status` reports it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.kernel

TOPO = """apiVersion: netlab.dev/v1alpha1
kind: Lab
metadata: {name: pc}
spec:
  nodes: [{name: node-1}]
---
apiVersion: v1
kind: Namespace
metadata: {name: monitoring, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: outside}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: prometheus, namespace: monitoring}
spec:
  selector: {matchLabels: {app: prometheus}}
  template:
    metadata: {labels: {app: prometheus}}
    spec:
      containers: [{name: p, image: netlab/http-echo, ports: [{containerPort: 9090}]}]
---
apiVersion: v1
kind: Service
metadata: {name: prometheus, namespace: monitoring}
spec: {selector: {app: prometheus}, ports: [{name: http-web, port: 9090}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain, namespace: outside}
spec:
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec:
      containers: [{name: s, image: netlab/sleep}]
"""


@pytest.fixture
def lab(tmp_path: Path, up_lab) -> dict:
    f = tmp_path / "lab.yaml"
    f.write_text(TOPO)
    name = up_lab(f)
    status = json.loads(run_cli("status", name, "--json", check=True).stdout)
    return {"name": name, "status": status}


def _squeezed(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


def test_proxy_config_of_a_running_lab(lab: dict) -> None:
    name = lab["name"]
    pods = {f"{p['namespace']}/{p['name']}": p for p in lab["status"]["pods"]}
    prom_ip = pods["monitoring/prometheus-0"]["ip"]
    svc = next(s for s in lab["status"]["services"] if s["name"] == "prometheus")
    vip = svc.get("clusterIP") or svc.get("vip") or svc.get("cluster_ip")

    listeners = _squeezed(run_cli("proxy-config", name, "monitoring/prometheus-0", "listeners",
                                  check=True).stdout)
    assert listeners[0] == "ADDRESSES PORT MATCH DESTINATION"
    assert "0.0.0.0 15001 ALL PassthroughCluster" in listeners
    assert "0.0.0.0 9090 Trans: raw_buffer; App: http/1.1,h2c Route: 9090" in listeners
    # No PeerAuthentication: PERMISSIVE, an mTLS chain and a plaintext one (§D2).
    assert ("0.0.0.0 15006 Trans: tls; App: istio,istio-peer-exchange,istio-http/1.0,istio-http/1.1,"
            "istio-h2; Addr: *:9090 Cluster: inbound|9090||") in listeners
    assert "0.0.0.0 15006 Trans: raw_buffer; Addr: *:9090 Cluster: inbound|9090||" in listeners

    routes = _squeezed(run_cli("proxy-config", name, "prometheus-0", "routes", check=True).stdout)
    row = next(r for r in routes if r.startswith("9090 "))
    assert row.startswith("9090 prometheus.monitoring.svc.cluster.local:9090 prometheus, ")
    assert vip is None or vip in json.dumps(json.loads(run_cli(
        "proxy-config", name, "prometheus-0", "routes", "--json", check=True).stdout))

    endpoints = _squeezed(run_cli("proxy-config", name, "prometheus-0", "endpoints", check=True).stdout)
    assert (f"{prom_ip}:9090 HEALTHY OK outbound|9090||prometheus.monitoring.svc.cluster.local"
            in endpoints)

    # A pod without a sidecar: one clear error, no traceback.
    res = run_cli("proxy-config", name, "outside/plain-0", "clusters")
    assert res.returncode != 0
    assert "has no sidecar" in res.stderr and "Traceback" not in res.stderr
