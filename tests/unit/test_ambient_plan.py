"""Ambient planning: who is enrolled, and that only enrolled pods/nodes get rules and ztunnels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import golden

from netlab import topology
from netlab.plan.modes.ambient import enrolled
from netlab.plan.istio_rules import render_ambient_hostprobe, render_ambient_inpod
from netlab.plan import iptables_text as it
from netlab.plan.cluster_dns import resolv_conf
from netlab.plan.options import PlanOptions
from netlab.plan.planner import plan
from netlab.snapshot import ProxySnapshot, from_json

REPO = Path(__file__).resolve().parents[2]
TOPO = REPO / "topologies" / "ambient-bookinfo.yaml"
GOLDEN = golden.ISTIO  # vendored copies, see tests/golden/istio/README.md


def _one_pod_deployment(name: str, namespace: str, dataplane_mode: str, node: str) -> str:
    """A one-replica Deployment whose pod label sets istio.io/dataplane-mode."""
    return f"""
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}, istio.io/dataplane-mode: {dataplane_mode}}}
    spec:
      nodeName: {node}
      containers: [{{name: {name}, image: netlab/sleep}}]
"""


# A pod that opts in inside an unlabelled namespace, and one that opts out of an ambient one.
EXTRA = ("\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: optin}\n"
         + _one_pod_deployment("solo", "optin", "ambient", "node-1")
         + _one_pod_deployment("optout", "bookinfo", "none", "node-2"))


def _plan(tmp_path: Path, text: str, version: str = "1.24+", processes: bool = True):
    f = tmp_path / "lab.yaml"
    f.write_text(text.replace('version: "1.24+"', f'version: "{version}"'))
    lab = topology.load([str(f)])
    return lab, plan(lab, PlanOptions(python="python3", start_processes=processes))


@pytest.fixture
def planned(tmp_path: Path):
    return _plan(tmp_path, TOPO.read_text() + EXTRA)


def test_enrollment_by_namespace_pod_label_and_opt_out(planned) -> None:
    lab, state = planned
    got = {p.key: enrolled(lab, p) for p in state.pods}
    assert got == {"bookinfo/sleep-0": True, "bookinfo/ratings-0": True, "bookinfo/ratings-1": True,
                   "outside/sleep-0": False, "outside/echo-0": False, "optin/solo-0": True,
                   "bookinfo/optout-0": False}


def test_inpod_rules_and_policy_routing_only_for_enrolled_pods(planned) -> None:
    lab, state = planned
    in_mesh = {p.netns for p in state.pods if enrolled(lab, p)}
    out = {p.netns for p in state.pods if not enrolled(lab, p)}
    ambient = [r for r in state.rulesets if r.owner == "istio-ambient"]
    assert {r.netns for r in ambient} == in_mesh
    assert all(r.text == render_ambient_inpod("redirect", bypass_inbound=False, dns_capture=True)
               for r in ambient)
    assert not {r.netns for r in state.rulesets} & out
    rules = {r.netns: r for r in state.ip_rules}
    assert set(rules) == in_mesh
    assert all((r.fwmark, r.mask, r.table, r.priority) == (0x111, 0xFFF, 100, 32764) for r in rules.values())


def test_bypass_inbound_annotation_selects_ingress_rules(tmp_path: Path) -> None:
    text = TOPO.read_text().replace(
        "      labels: {app: ratings, version: v1}\n    spec:",
        "      labels: {app: ratings, version: v1}\n"
        "      annotations: {ambient.istio.io/bypass-inbound-capture: \"true\"}\n    spec:")
    lab, state = _plan(tmp_path, text)
    by_ns = {r.netns: r.text for r in state.rulesets if r.owner == "istio-ambient"}
    ratings = [p for p in state.pods if p.deployment == "ratings"]
    assert ratings and all(by_ns[p.netns] == render_ambient_inpod("redirect", bypass_inbound=True,
                                                                  dns_capture=True) for p in ratings)


def test_hostprobe_in_nodes_with_ambient_pods_only(planned) -> None:
    lab, state = planned
    # node-2 has ratings-0 (ambient) and optout-0 (not); node-1 has sleep, ratings-1, solo.
    expect = {n.netns: sorted(p.ip for p in state.pods if p.node == n.name and enrolled(lab, p))
              for n in state.nodes}
    sets = {s.netns: sorted(s.members) for s in state.ipsets}
    assert sets == {k: v for k, v in expect.items() if v}
    probes = [r for r in state.rulesets if r.owner == "istio-hostprobe"]
    assert {r.netns for r in probes} == set(sets)
    assert all(r.text == render_ambient_hostprobe(jump_first=True) for r in probes)


def test_no_ambient_no_processes(tmp_path: Path) -> None:
    text = TOPO.read_text().replace("    istio.io/dataplane-mode: ambient\n", "")
    _, state = _plan(tmp_path, text)
    assert not [r for r in state.rulesets if r.owner.startswith("istio")]
    assert not [p for p in state.processes if p.name.startswith(("ztunnel", "istiod"))]
    assert not state.ipsets and not state.ip_rules


def test_processes_ca_and_one_ztunnel_per_ambient_node(planned) -> None:
    lab, state = planned
    procs = {p.name: p for p in state.processes}
    ca = procs["istiod-ca"]
    assert ca.netns.endswith("-fabric") and "172.18.0.1:15012" in ca.argv
    assert ca.signals_ready and not ca.ready
    by_node = {n: sorted(map(tuple, sas)) for n, sas in json.loads(ca.config).items()}
    assert by_node == {"node-1": [("bookinfo", "bookinfo-ratings"), ("bookinfo", "sleep"), ("optin", "default")],
                       "node-2": [("bookinfo", "bookinfo-ratings")]}
    zts = sorted(n for n in procs if n.startswith("ztunnel/"))
    assert zts == ["ztunnel/node-1", "ztunnel/node-2"]
    z1 = procs["ztunnel/node-1"]
    # It says ready itself once every pod's listeners are open: no listener polling.
    assert z1.signals_ready and not z1.ready
    cfg = from_json(ProxySnapshot, z1.config)
    assert cfg.node == "node-1" and cfg.capture == "redirect" and cfg.proxy == "ztunnel"
    wl = {w.key: w for w in cfg.workloads}
    assert wl["outside/sleep-0"].mode == "" and wl["bookinfo/sleep-0"].mode == "ambient"
    assert cfg.services[0].vip and cfg.services[0].ports[0].endpoints
    assert {w.key for w in cfg.local_workloads("ambient")} == {
        p.key for p in state.pods if p.node == "node-1" and enrolled(lab, p)}


def test_no_processes_when_start_processes_false(tmp_path: Path) -> None:
    _, state = _plan(tmp_path, TOPO.read_text(), processes=False)
    assert not state.processes
    assert [r for r in state.rulesets if r.owner == "istio-ambient"]


def test_version_123_renders_tproxy_rules(tmp_path: Path) -> None:
    _, state = _plan(tmp_path, TOPO.read_text(), version="1.23")
    texts = {r.text for r in state.rulesets if r.owner == "istio-ambient"}
    assert texts == {render_ambient_inpod("tproxy", dns_capture=True)}
    assert "TPROXY" in texts.pop()


@pytest.mark.parametrize("version,golden", [("1.24+", "ambient-inpod-1.28/default.golden"),
                                            ("1.23", "ambient-inpod-1.23/default.golden")])
def test_inpod_rules_are_istio_default_with_dns_capture(tmp_path: Path, version: str,
                                                        golden: str) -> None:
    """The planned pod rules are Istio's default ones: DNS redirected to ztunnel's 15053."""
    _, state = _plan(tmp_path, TOPO.read_text(), version=version)
    texts = {r.text for r in state.rulesets if r.owner == "istio-ambient"}
    assert len(texts) == 1
    want = it.parse_all((GOLDEN / golden).read_text())[0]
    got = it.parse(texts.pop())
    assert got == want, it.diff(want, got, ("golden", "planned"))
    assert "--to-port 15053" in (GOLDEN / golden).read_text()


def test_ztunnel_config_names_the_pods_resolver(planned) -> None:
    """The DNS proxy forwards to what the pods' resolv.conf names (the cluster DNS)."""
    _, state = planned
    z1 = next(p for p in state.processes if p.name == "ztunnel/node-1")
    assert json.loads(z1.config)["dns"] == {"upstream": f"{state.dns_ip}:53",
                                            "domain": "cluster.local", "forward_in_pod": True}
    assert f"nameserver {state.dns_ip}\n" in resolv_conf("bookinfo", state.dns_ip)
