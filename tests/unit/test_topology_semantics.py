"""Checks no schema can express: address ranges, exhaustion, name collisions, ports, argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.errors import TopologyError
from netlab.mesh import PROXY_PORTS
from netlab.model import FABRIC_CIDR, Lab, Node, Service, ServicePort
from netlab.plan import naming
from netlab.plan.planner import PlanOptions, plan
from netlab.topology import load

LAB = """apiVersion: netlab.dev/v1alpha1
kind: Lab
metadata: {name: t}
spec:
  network: {podCIDR: 10.244.0.0/16, serviceCIDR: 10.96.0.0/16}
  nodes: [{name: node-1}]
"""


def deployment(name: str = "web", namespace: str = "default", containers: str | None = None) -> str:
    containers = containers or "        - {name: web, image: netlab/http-echo, ports: [{containerPort: 8080}]}\n"
    return (f"---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n"
            f"    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n{containers}")


def service(name: str, ports: str = "[{port: 80, targetPort: 8080}]") -> str:
    return (f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
            f"spec: {{selector: {{app: web}}, ports: {ports}}}\n")


def refused(tmp_path: Path, text: str) -> TopologyError:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load([str(path)])
    return info.value


@pytest.mark.parametrize("field,cidr,words", [
    ("podCIDR", "172.18.0.0/16", "fabric"),
    ("podCIDR", "172.16.0.0/12", "fabric"),
    ("serviceCIDR", str(FABRIC_CIDR.supernet(4)), "fabric"),
    ("podCIDR", "127.0.0.0/16", "loopback"),
    ("serviceCIDR", "169.254.0.0/16", "link-local"),
    ("podCIDR", "224.0.0.0/16", "multicast"),
    ("serviceCIDR", "0.0.0.0/16", "0.0.0.0/8"),
    ("podCIDR", "240.0.0.0/16", "reserved"),
])
def test_special_ranges_are_refused(tmp_path: Path, field: str, cidr: str, words: str) -> None:
    text = LAB.replace(f"{field}: 10.244.0.0/16" if field == "podCIDR" else f"{field}: 10.96.0.0/16",
                       f"{field}: {cidr}")
    e = refused(tmp_path, text)
    assert e.path == f"spec.network.{field}" and words in e.problem and e.line == 5


def test_service_cidr_exhaustion_is_refused_at_load(tmp_path: Path) -> None:
    text = LAB.replace("10.96.0.0/16", "10.96.0.0/24") + deployment()
    text += "".join(service(f"s{i}") for i in range(256 - 2 - 2 + 1))
    e = refused(tmp_path, text)
    assert "no address left" in e.problem and "serviceCIDR" in e.fix and e.document == 2 + 253


def test_planner_says_so_too_for_a_lab_built_in_code() -> None:
    services = [Service("default", f"s{i}", [ServicePort(80, 80)], {"app": "x"}) for i in range(253)]
    lab = Lab(name="t", nodes=[Node("n1")], service_cidr="10.96.0.0/24", services=services)
    with pytest.raises(TopologyError, match="no address left"):
        plan(lab, PlanOptions(start_processes=False))


def test_pod_netns_names_are_injective() -> None:
    assert naming.pod_netns("l", "fz-a", "b-0") != naming.pod_netns("l", "fz", "a-b-0")
    longest = naming.pod_netns("a" * 20, "n" * 63, "d" * 60 + "-63")
    assert len(longest.encode()) < 255


def test_colliding_names_build_distinct_pods(tmp_path: Path) -> None:
    ns = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n"
    text = LAB + ns % "fz-a" + ns % "fz" + deployment("b", "fz-a") + deployment("a-b", "fz")
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    state = plan(load([str(path)]), PlanOptions(start_processes=False))
    names = [n.name for n in state.netns]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("port", sorted(PROXY_PORTS))
def test_proxy_ports_are_refused_as_app_ports(tmp_path: Path, port: int) -> None:
    containers = f"        - {{name: web, image: netlab/http-echo, ports: [{{containerPort: {port}}}]}}\n"
    e = refused(tmp_path, LAB + deployment(containers=containers))
    assert e.path.endswith("ports[0].containerPort") and "reserved" in e.problem


def test_proxy_ports_are_refused_as_target_ports(tmp_path: Path) -> None:
    assert refused(tmp_path, LAB + deployment() + service("s", "[{port: 80, targetPort: 15006}]")).path == \
        "spec.ports[0].targetPort"
    assert refused(tmp_path, LAB + deployment() + service("s", "[{port: 15001}]")).path == "spec.ports[0].port"


def test_two_containers_on_one_port_are_refused(tmp_path: Path) -> None:
    containers = ("        - {name: a, image: netlab/http-echo, ports: [{containerPort: 8080}]}\n"
                  "        - {name: b, image: netlab/tcp-echo, ports: [{containerPort: 8080}]}\n")
    e = refused(tmp_path, LAB + deployment(containers=containers))
    assert e.path == "spec.template.spec.containers[1].ports[0].containerPort" and "'a'" in e.problem
    udp = containers.replace("8080}]}\n        - {name: b", "8080, protocol: UDP}]}\n        - {name: b")
    path = tmp_path / "ok.yaml"
    path.write_text(LAB + deployment(containers=udp))
    assert load([str(path)]).deployments  # same number, other protocol: no clash


@pytest.mark.parametrize("field", ["command", "args"])
def test_nul_in_argv_is_refused(tmp_path: Path, field: str) -> None:
    argv = '[/bin/sh, "-c", "echo a\\0b"]' if field == "command" else '["a\\0b"]'
    containers = f"        - {{name: web, image: netlab/sleep, {field}: {argv}}}\n"
    e = refused(tmp_path, LAB + deployment(containers=containers))
    assert "NUL" in e.problem and e.path.startswith(f"spec.template.spec.containers[0].{field}[")


@pytest.mark.parametrize("name", ["1ABC", "A=B", "A B", ""])
def test_invalid_env_names_are_refused(tmp_path: Path, name: str) -> None:
    containers = f'        - {{name: web, image: netlab/sleep, env: [{{name: "{name}", value: x}}]}}\n'
    e = refused(tmp_path, LAB + deployment(containers=containers))
    assert e.path == "spec.template.spec.containers[0].env[0].name"


def test_env_value_with_nul_is_refused(tmp_path: Path) -> None:
    containers = '        - {name: web, image: netlab/sleep, env: [{name: A, value: "a\\0"}]}\n'
    assert "NUL" in refused(tmp_path, LAB + deployment(containers=containers)).problem


def test_missing_absolute_program_is_refused_at_load(tmp_path: Path) -> None:
    containers = "        - {name: web, image: my/app, command: [/nonexistent/netlab-app]}\n"
    e = refused(tmp_path, LAB + deployment(containers=containers))
    assert e.path == "spec.template.spec.containers[0].command[0]" and "does not exist" in e.problem
    containers = f"        - {{name: web, image: my/app, command: [{tmp_path}]}}\n"
    assert "not an executable" in refused(tmp_path, LAB + deployment(containers=containers)).problem


def test_a_program_on_path_is_left_to_start_time(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(LAB + deployment(containers="        - {name: web, image: my/app, command: [python3]}\n"))
    assert load([str(path)]).deployments[0].containers[0].command == ["python3"]


def test_too_many_pods_are_refused(tmp_path: Path) -> None:
    text = LAB.replace("nodes: [{name: node-1}]", "nodes: [" + ", ".join(f"{{name: n{i}}}" for i in range(6)) + "]")
    text += "".join(deployment(f"d{i}").replace("spec:\n  selector", "spec:\n  replicas: 64\n  selector")
                    for i in range(5))
    e = refused(tmp_path, text)
    assert "more than 256 pods" in e.problem and e.path == "spec.replicas"
