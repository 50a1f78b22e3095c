"""A waypoint Gateway in the plan: the objects istiod's controller makes, who is attached
to it, what 1.23 says, and the path ztunnel picks (mesh-facts §7, mesh-facts-2 §C1, §C2)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from netlab import mesh, topology
from netlab.errors import TopologyError
from netlab.model import Lab, Namespace
from netlab.plan.options import PlanOptions
from netlab.plan.planner import plan
from netlab.plan.state import DesiredState
from netlab.snapshot import ProxySnapshot, from_json
from netlab.dataplane.ztunnel import routing

REPO = Path(__file__).resolve().parents[2]
TOPO = REPO / "topologies" / "waypoint.yaml"
WP = "waypoint.mesh.svc.cluster.local"


def load() -> Lab:
    return topology.load([TOPO])


def planned(lab: Lab | None = None) -> DesiredState:
    return plan(lab or load(), PlanOptions(python="python3"))


def snapshot(state: DesiredState, proxy: str) -> ProxySnapshot:
    spec = next(p for p in state.processes if p.name.startswith(proxy))
    assert spec.config is not None
    return from_json(ProxySnapshot, spec.config)


def pod(state: DesiredState, key: str):  # type: ignore[no-untyped-def]
    return next(p for p in state.pods if p.key == key)


def svc(state: DesiredState, name: str):  # type: ignore[no-untyped-def]
    return next(s for s in state.services if s.name == name)


def test_gateway_becomes_pod_account_and_service_named_after_it() -> None:
    state = planned()
    wp = pod(state, "mesh/waypoint-0")
    assert wp.service_account == "waypoint" and wp.deployment == "waypoint"
    assert wp.labels == {"gateway.networking.k8s.io/gateway-name": "waypoint",
                         "gateway.istio.io/managed": "istio.io-mesh-controller",
                         "istio.io/dataplane-mode": "none", "sidecar.istio.io/inject": "false",
                         "service.istio.io/canonical-name": "waypoint",
                         "service.istio.io/canonical-revision": "latest"}
    assert wp.node == "node-2"  # netlab.dev/node-name
    assert wp.mode == "waypoint" and wp.identity("cluster.local") == \
        "spiffe://cluster.local/ns/mesh/sa/waypoint"
    s = svc(state, "waypoint")
    assert s.vip and [(p.port, [e.pod for e in p.endpoints]) for p in s.ports] == \
        [(15021, ["mesh/waypoint-0"]), (15008, ["mesh/waypoint-0"])]
    assert s.waypoint == ""  # a waypoint's own Service never has a waypoint


def test_waypoint_pod_is_not_captured_and_runs_the_waypoint_proxy() -> None:
    state = planned()
    wp = pod(state, "mesh/waypoint-0")
    assert not [r for r in state.rulesets if r.netns == wp.netns]
    proc = next(p for p in state.processes if p.name == "waypoint/mesh/waypoint-0")
    assert proc.netns == wp.netns and proc.signals_ready
    assert proc.argv[1:3] == ("-m", "netlab.dataplane.waypoint")
    cfg = json.loads(proc.config or "")
    assert cfg["proxy"] == "waypoint" and cfg["waypoint"] == WP
    assert {r["name"] for r in cfg["routes"]} == {"echo-to-v1", "split-90-10"}
    # no app process for the proxy image
    assert not [p for p in state.processes if p.name.startswith("app/mesh/waypoint")]


def test_namespace_label_attaches_every_service_but_not_workloads_by_default() -> None:
    state = planned()
    for name in ("echo", "split", "guarded", "echo-v1", "echo-v2"):
        assert svc(state, name).waypoint == WP, name
    # waypoint-for: service (the default) serves no workload traffic
    assert pod(state, "mesh/echo-v1-0").waypoint == ""


def _with(lab: Lab, **labels: str) -> Lab:
    """`lab` with extra labels on the Gateway (waypoint-for) or namespace `mesh`."""
    gw = labels.pop("gateway", None)
    resources = [dataclasses.replace(r, labels={**r.labels, mesh.WAYPOINT_FOR_LABEL: gw})
                 if gw and r.kind == "Gateway" else r for r in lab.resources]
    nss = [dataclasses.replace(n, labels={**n.labels, **labels}) if n.name == "mesh" else n
           for n in lab.namespaces]
    return dataclasses.replace(lab, resources=resources, namespaces=nss)


@pytest.mark.parametrize("traffic,services,workloads", [
    ("service", True, False), ("workload", False, True), ("all", True, True), ("none", False, False)])
def test_waypoint_for(traffic: str, services: bool, workloads: bool) -> None:
    state = planned(_with(load(), gateway=traffic))
    assert (svc(state, "echo").waypoint == WP) is services
    assert (pod(state, "mesh/echo-v1-0").waypoint == WP) is workloads
    assert pod(state, "mesh/waypoint-0").waypoint == ""  # never its own waypoint


def test_service_label_overrides_namespace_and_none_opts_out() -> None:
    lab = load()
    services = [dataclasses.replace(s, labels={mesh.USE_WAYPOINT_LABEL: "none"}) if s.name == "guarded" else s
                for s in lab.services]
    state = planned(dataclasses.replace(lab, services=services))
    assert svc(state, "guarded").waypoint == ""
    assert svc(state, "echo").waypoint == WP
    # and without the namespace label, a Service label alone attaches
    lab = _with(load())
    lab = dataclasses.replace(lab, namespaces=[
        dataclasses.replace(n, labels={mesh.DATAPLANE_MODE_LABEL: "ambient"}) if n.name == "mesh" else n
        for n in lab.namespaces], services=[
        dataclasses.replace(s, labels={mesh.USE_WAYPOINT_LABEL: "waypoint"}) if s.name == "split" else s
        for s in lab.services])
    state = planned(lab)
    assert svc(state, "split").waypoint == WP and svc(state, "echo").waypoint == ""


def test_pod_label_overrides_namespace_for_workload_waypoints() -> None:
    lab = _with(load(), gateway="all")
    deps = [dataclasses.replace(d, labels={**d.labels, mesh.USE_WAYPOINT_LABEL: "none"})
            if d.name == "echo-v2" else d for d in lab.deployments]
    state = planned(dataclasses.replace(lab, deployments=deps))
    assert pod(state, "mesh/echo-v1-0").waypoint == WP
    assert pod(state, "mesh/echo-v2-0").waypoint == ""


def test_unknown_waypoint_name_is_a_located_error() -> None:
    lab = load()
    nss = [dataclasses.replace(n, labels={**n.labels, mesh.USE_WAYPOINT_LABEL: "wp2"}) if n.name == "mesh" else n
           for n in lab.namespaces]
    with pytest.raises(TopologyError) as e:
        planned(dataclasses.replace(lab, namespaces=nss))
    assert e.value.file.endswith("waypoint.yaml") and e.value.path == 'metadata.labels["istio.io/use-waypoint"]'
    assert "mesh/wp2" in e.value.problem and "mesh/waypoint" in e.value.problem


def test_istio_123_refuses_a_waypoint_and_says_why() -> None:
    with pytest.raises(TopologyError) as e:
        planned(dataclasses.replace(load(), istio_version="1.23"))
    assert e.value.path == "spec.gatewayClassName" and e.value.document is not None
    assert "1.24" in e.value.problem and "forwarded" in e.value.problem
    assert "1.24+" in e.value.fix


def test_listener_and_node_are_checked() -> None:
    lab = load()
    bad = [dataclasses.replace(r, spec={**r.spec, "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]})
           if r.kind == "Gateway" else r for r in lab.resources]
    with pytest.raises(TopologyError, match="15008 with protocol HBONE"):
        planned(dataclasses.replace(lab, resources=bad))
    bad = [dataclasses.replace(r, annotations={mesh.NODE_NAME_ANNOTATION: "node-9"})
           if r.kind == "Gateway" else r for r in lab.resources]
    with pytest.raises(TopologyError) as e:
        planned(dataclasses.replace(lab, resources=bad))
    assert e.value.path == 'metadata.annotations["netlab.dev/node-name"]' and "node-9" in e.value.problem


def test_ambient_lab_without_gateway_is_unchanged() -> None:
    lab = load()
    bare = dataclasses.replace(lab, resources=[r for r in lab.resources if r.kind != "Gateway"],
                               namespaces=[Namespace(n.name, {k: v for k, v in n.labels.items()
                                                              if k != mesh.USE_WAYPOINT_LABEL}, n.source)
                                           for n in lab.namespaces])
    state = planned(bare)
    assert not [p for p in state.pods if p.mode == "waypoint"]
    assert all(s.waypoint == "" for s in state.services)


# -- the path ztunnel picks ----------------------------------------------------------------

def test_ztunnel_sends_service_traffic_to_the_waypoint_with_the_vip_as_authority() -> None:
    state = planned()
    cfg = snapshot(state, "ztunnel/node-1")
    sleep, echo = pod(state, "mesh/sleep-0"), svc(state, "echo")
    wp = pod(state, "mesh/waypoint-0")
    r = routing.outbound(cfg, sleep, (echo.vip, 80))
    assert r.hbone_addr == (wp.ip, 15008) and r.authority == f"{echo.vip}:80"
    assert r.dst == wp and r.service == "echo.mesh.svc.cluster.local" and r.via_waypoint


def test_ztunnel_goes_direct_to_a_pod_ip_without_workload_waypoint() -> None:
    state = planned()
    cfg = snapshot(state, "ztunnel/node-1")
    v1 = pod(state, "mesh/echo-v1-0")
    r = routing.outbound(cfg, pod(state, "mesh/sleep-0"), (v1.ip, 8080))
    assert r.hbone_addr == (v1.ip, 15008) and r.authority == f"{v1.ip}:8080" and not r.via_waypoint


def test_workload_waypoint_takes_pod_ip_traffic() -> None:
    state = planned(_with(load(), gateway="workload"))
    cfg = snapshot(state, "ztunnel/node-1")
    v1, wp = pod(state, "mesh/echo-v1-0"), pod(state, "mesh/waypoint-0")
    r = routing.outbound(cfg, pod(state, "mesh/sleep-0"), (v1.ip, 8080))
    assert r.hbone_addr == (wp.ip, 15008) and r.authority == f"{v1.ip}:8080" and r.service is None


def test_never_through_a_waypoint_twice() -> None:
    state = planned()
    cfg = snapshot(state, "ztunnel/node-1")
    echo = svc(state, "echo")
    r = routing.outbound(cfg, pod(state, "mesh/waypoint-0"), (echo.vip, 80))
    assert not r.via_waypoint and r.dst is not None and r.dst.deployment in ("echo-v1", "echo-v2")


def test_forwarded_host_names_the_service_inbound() -> None:
    state = planned()
    cfg = snapshot(state, "ztunnel/node-1")
    v1 = pod(state, "mesh/echo-v1-0")
    hdr = {"forwarded": 'for="10.244.0.2:4711";host=split.mesh.svc.cluster.local'}
    assert routing.forwarded_host(hdr) == "split.mesh.svc.cluster.local"
    assert routing.inbound_service(cfg, v1, 8080, hdr).name == "split"  # type: ignore[union-attr]
    # without it, the target-port guess: the first Service with that target port
    assert routing.inbound_service(cfg, v1, 8080, {}).name == "echo"  # type: ignore[union-attr]
