"""The pure plan for the example topologies: addresses, routes, services, processes."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from netlab import topology
from netlab.plan import naming
from netlab.plan.planner import PlanOptions, plan, resolv_conf

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "topologies").glob("*.yaml"))


def planned(name: str):
    lab = topology.load([str(REPO / "topologies" / name)])
    return lab, plan(lab, PlanOptions(python="/venv/python"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_plans(path: Path) -> None:
    lab = topology.load([str(path)])
    state = plan(lab, PlanOptions(python="py"))
    names = [n.name for n in state.netns]
    assert len(names) == len(set(names)), "netns names must be unique"
    assert all(n.startswith(f"nl-{lab.name}-") for n in names), "every netns carries the lab mark"
    # plus one pod per waypoint Gateway, which istiod's controller would create
    waypoints = sum(1 for r in lab.kept("Gateway") if r.spec.get("gatewayClassName") == "istio-waypoint")
    assert len(state.pods) == sum(d.replicas for d in lab.deployments) + waypoints


def test_bookinfo_network_shape() -> None:
    lab, state = planned("bookinfo.yaml")
    assert [n.name for n in state.nodes] == ["node-1", "node-2"]
    n1, n2 = state.nodes
    assert (n1.ip, n2.ip) == ("172.18.0.2", "172.18.0.3")
    assert ipaddress.ip_network(n1.pod_cidr).overlaps(ipaddress.ip_network(n2.pod_cidr)) is False
    # each node routes the other node's pod range via the other node's fabric address
    routes = {(r.netns, r.dst, r.via) for r in state.routes}
    assert (n1.netns, n2.pod_cidr, n2.ip) in routes and (n2.netns, n1.pod_cidr, n1.ip) in routes
    # pods sit in their node's range, behind the link-local gateway, with a /32
    for pod in state.pods:
        node = next(n for n in state.nodes if n.name == pod.node)
        assert ipaddress.ip_address(pod.ip) in ipaddress.ip_network(node.pod_cidr)
        assert any(r.netns == pod.netns and r.dst == "default" and r.via == naming.GATEWAY_IP
                   for r in state.routes)
        assert any(r.netns == node.netns and r.dst == f"{pod.ip}/32" and r.dev == pod.host_veth
                   for r in state.routes)
        veth = next(v for v in state.veths if v.peer_netns == pod.netns)
        assert (veth.netns, veth.name, veth.peer_name) == (node.netns, pod.host_veth, "eth0")
    ratings = [p for p in state.pods if p.deployment == "ratings"]
    assert sorted(p.node for p in ratings) == ["node-1", "node-2"], "replicas spread over matching nodes"
    sleep = next(p for p in state.pods if p.deployment == "sleep")
    assert sleep.node == "node-1"  # nodeName pins


def test_bookinfo_service_rules_dnat_to_each_replica() -> None:
    lab, state = planned("bookinfo.yaml")
    svc = next(s for s in state.services if s.name == "ratings")
    assert ipaddress.ip_address(svc.vip) in ipaddress.ip_network(lab.service_cidr)
    assert svc.vip != state.dns_ip
    eps = svc.ports[0].endpoints
    assert sorted(e.ip for e in eps) == sorted(p.ip for p in state.pods if p.deployment == "ratings")
    assert all(e.port == 9080 for e in eps)  # targetPort "http" resolved to the containerPort
    rules = [r for r in state.rulesets if r.owner == "kube-proxy"]
    assert {r.netns for r in rules} == {n.netns for n in state.nodes}
    text = rules[0].text
    for e in eps:
        assert f"-j DNAT --to-destination {e.ip}:9080" in text
    assert "--probability 0.50000000000" in text  # first of two endpoints: 1/2
    assert f"-d {svc.vip}/32 -p tcp -m tcp --dport 9080" in text


def test_service_without_endpoints_is_rejected_like_kube_proxy() -> None:
    lab = topology.load([str(REPO / "topologies" / "bookinfo.yaml")])
    lab.services[0].selector = {"app": "nobody"}
    state = plan(lab, PlanOptions(python="py"))
    assert "has no endpoints\" -j REJECT" in state.rulesets[0].text


def test_processes_dns_apps_and_no_process_for_sleep() -> None:
    lab, state = planned("bookinfo.yaml")
    names = [p.name for p in state.processes]
    assert "dns" in names
    dns = next(p for p in state.processes if p.name == "dns")
    assert dns.netns == naming.fabric_netns(lab.name)
    assert dns.signals_ready and not dns.ready  # it says when every node's socket is bound
    assert '"ratings.bookinfo.svc.cluster.local"' in (dns.config or "")
    apps = [p for p in state.processes if p.name.startswith("app/")]
    assert len(apps) == 2 and all("http-echo" in p.argv for p in apps)
    assert not any("sleep" in p.name for p in state.processes)
    assert all(p.argv[0] == "/venv/python" for p in apps)
    assert apps[0].resolv_conf == resolv_conf("bookinfo", state.dns_ip)
    assert all(p.signals_ready and not p.ready for p in apps)


def test_a_users_command_is_waited_for_by_its_declared_port() -> None:
    """A foreign command cannot use the ready pipe: `up` waits for its containerPort."""
    lab = topology.load([str(REPO / "topologies" / "bookinfo.yaml")])
    dep = next(d for d in lab.deployments if d.containers[0].ports)
    dep.containers[0].command = ["/usr/bin/socat", "TCP-LISTEN:9080,fork", "EXEC:/bin/cat"]
    state = plan(lab, PlanOptions(python="py"))
    app = next(p for p in state.processes if p.name.startswith(f"app/{dep.namespace}/{dep.name}-"))
    assert not app.signals_ready
    assert [(c.port, c.proto) for c in app.ready] == [(p.container_port, "tcp")
                                                      for p in dep.containers[0].ports]


def test_resolv_conf_search_path() -> None:
    conf = resolv_conf("bookinfo", "10.96.0.10")
    assert "nameserver 10.96.0.10" in conf
    assert "search bookinfo.svc.cluster.local svc.cluster.local cluster.local" in conf
    assert "ndots:5" in conf
