"""Workload kinds and placement, judged against the default scheduler's documented rules.

- env: each `env` entry reaches the process' environment (the plan's ProcessSpec, which
  the applier passes to execve); valueFrom is refused at its line.
- placement: one workload's replicas spread over the eligible nodes even when other
  workloads load one node (the gap issue 14 found); topologySpreadConstraints
  (maxSkew over hostname and zone domains, DoNotSchedule refused at the constraint,
  ScheduleAnyway best effort); required node affinity with In/NotIn/Exists/DoesNotExist.
- kinds: Pod (its own name and labels), StatefulSet (`<name>-<i>`), ConfigMap and Secret
  (accepted, checked, noted); Kubernetes' schema still applies to each.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from netlab.errors import TopologyError
from netlab.model import Lab
from netlab.plan.planner import PlanOptions, plan
from netlab.topology import load

NODES = """apiVersion: netlab.dev/v1alpha1
kind: Lab
metadata: {name: t}
spec:
  nodes:
    - {name: n1, labels: {topology.kubernetes.io/zone: a, disk: ssd}}
    - {name: n2, labels: {topology.kubernetes.io/zone: a}}
    - {name: n3, labels: {topology.kubernetes.io/zone: b, disk: hdd}}
"""


def workload(name: str, replicas: int = 1, pod_spec: str = "", kind: str = "Deployment",
             container: str = "        - {name: c, image: netlab/sleep}\n") -> str:
    api = "v1" if kind == "Pod" else "apps/v1"
    if kind == "Pod":
        return (f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\n"
                f"spec:\n{_indent(pod_spec, 2)}  containers:\n{_indent(container, -4)}")
    extra = "  serviceName: x\n" if kind == "StatefulSet" else ""
    return (f"---\napiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}}}\n"
            f"spec:\n  replicas: {replicas}\n{extra}  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n"
            f"    metadata: {{labels: {{app: {name}}}}}\n    spec:\n{_indent(pod_spec, 6)}      containers:\n"
            f"{container}")


def _indent(text: str, n: int) -> str:
    if n >= 0:
        return "".join(" " * n + line + "\n" for line in text.splitlines())
    return "".join(line[-n:] + "\n" for line in text.splitlines())


def loaded(tmp_path: Path, *docs: str, lab: str = NODES) -> Lab:
    path = tmp_path / "lab.yaml"
    path.write_text(lab + "".join(docs))
    return load([str(path)])


def refused(tmp_path: Path, *docs: str, lab: str = NODES) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        loaded(tmp_path, *docs, lab=lab)
    return info.value


def nodes_of(lab: Lab, workload: str) -> list[str]:
    return [p.node for p in plan(lab, PlanOptions(python="py")).pods if p.deployment == workload]


# --- env ------------------------------------------------------------------------------

def test_env_reaches_the_process(tmp_path: Path) -> None:
    lab = loaded(tmp_path, workload("web", container="        - name: c\n          image: netlab/http-echo\n"
                                                     "          env: [{name: GREETING, value: hi}, {name: EMPTY}]\n"))
    spec = next(p for p in plan(lab, PlanOptions(python="py")).processes if p.name.startswith("app/"))
    assert dict(spec.env) == {"GREETING": "hi", "EMPTY": ""}


def test_env_value_from_is_refused_at_its_line(tmp_path: Path) -> None:
    e = refused(tmp_path, workload("web", container="        - name: c\n          image: netlab/sleep\n"
                                                    "          env:\n            - name: IP\n"
                                                    "              valueFrom: {fieldRef: {fieldPath: status.podIP}}\n"))
    assert e.path == "spec.template.spec.containers[0].env[0].valueFrom"
    assert "not supported" in e.problem and e.line == NODES.count("\n") + 16


# --- spreading one workload -------------------------------------------------------------

def test_one_deployments_replicas_spread_even_when_other_pods_load_a_node(tmp_path: Path) -> None:
    """Least-loaded alone put both replicas of `web` on n1 (n2 held two pinned pods)."""
    pinned = workload("pinned", replicas=2, pod_spec="nodeName: n2")
    web = workload("web", replicas=2, pod_spec="nodeSelector: {topology.kubernetes.io/zone: a}")
    lab = loaded(tmp_path, pinned, web)
    assert sorted(nodes_of(lab, "web")) == ["n1", "n2"]


def test_zone_spread_do_not_schedule_balances_zones(tmp_path: Path) -> None:
    spread = ("topologySpreadConstraints:\n"
              "  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,\n"
              "     labelSelector: {matchLabels: {app: web}}}")
    lab = loaded(tmp_path, workload("web", replicas=4, pod_spec=spread))
    zone = {"n1": "a", "n2": "a", "n3": "b"}
    assert Counter(zone[n] for n in nodes_of(lab, "web")) == {"a": 2, "b": 2}
    # Without the constraint, spreading per node puts 3 of 4 in zone a (two nodes there).
    plain = loaded(tmp_path, workload("web", replicas=3))
    assert Counter(zone[n] for n in nodes_of(plain, "web")) == {"a": 2, "b": 1}


def test_hostname_spread_counts_every_matching_pod_of_the_namespace(tmp_path: Path) -> None:
    """The labelSelector may match another workload's pods: they count too."""
    other = workload("other", replicas=2, pod_spec="nodeName: n1",
                     container="        - {name: c, image: netlab/sleep}\n").replace("app: other", "app: web", 2)
    other = other.replace("matchLabels: {app: web}", "matchLabels: {app: web}")
    spread = ("topologySpreadConstraints:\n"
              "  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,\n"
              "     labelSelector: {matchLabels: {app: web}}}")
    lab = loaded(tmp_path, other, workload("web", replicas=2, pod_spec=spread).replace("app: web", "app: web", 2))
    assert "n1" not in nodes_of(lab, "web")


def test_do_not_schedule_without_the_key_is_refused_at_the_constraint(tmp_path: Path) -> None:
    spread = ("topologySpreadConstraints:\n"
              "  - {maxSkew: 1, topologyKey: example.com/rack, whenUnsatisfiable: DoNotSchedule,\n"
              "     labelSelector: {matchLabels: {app: web}}}")
    e = refused(tmp_path, workload("web", replicas=2, pod_spec=spread))
    assert e.path == "spec.template.spec.topologySpreadConstraints[0]"
    assert "example.com/rack" in e.problem and "fits no node" in e.problem and e.line is not None
    # Best effort with ScheduleAnyway: loads, and still spreads by workload.
    lab = loaded(tmp_path, workload("web", replicas=2, pod_spec=spread.replace("DoNotSchedule", "ScheduleAnyway")))
    assert len(set(nodes_of(lab, "web"))) == 2


def test_do_not_schedule_only_on_nodes_with_the_key(tmp_path: Path) -> None:
    """A node without the topology key is not a candidate (nodeAffinityPolicy Honor)."""
    spread = ("topologySpreadConstraints:\n"
              "  - {maxSkew: 3, topologyKey: disk, whenUnsatisfiable: DoNotSchedule,\n"
              "     labelSelector: {matchLabels: {app: web}}}")
    lab = loaded(tmp_path, workload("web", replicas=4, pod_spec=spread))
    assert set(nodes_of(lab, "web")) == {"n1", "n3"}


def test_schedule_anyway_prefers_the_emptier_zone(tmp_path: Path) -> None:
    zone = {"n1": "a", "n2": "a", "n3": "b"}
    busy_b = workload("busy", replicas=2, pod_spec="nodeName: n3").replace("app: busy", "app: web")
    spread = ("topologySpreadConstraints:\n"
              "  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway,\n"
              "     labelSelector: {matchLabels: {app: web}}}")
    lab = loaded(tmp_path, busy_b, workload("web", replicas=2, pod_spec=spread))
    assert [zone[n] for n in nodes_of(lab, "web")] == ["a", "a"]


@pytest.mark.parametrize("expr,nodes", [
    ("{key: disk, operator: In, values: [ssd, hdd]}", {"n1", "n3"}),
    ("{key: disk, operator: NotIn, values: [ssd]}", {"n2", "n3"}),
    ("{key: disk, operator: Exists}", {"n1", "n3"}),
    ("{key: disk, operator: DoesNotExist}", {"n2"}),
    ("{key: kubernetes.io/hostname, operator: In, values: [n2, n3]}", {"n2", "n3"}),
])
def test_required_node_affinity(tmp_path: Path, expr: str, nodes: set[str]) -> None:
    affinity = ("affinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n"
                f"      nodeSelectorTerms:\n        - matchExpressions: [{expr}]")
    lab = loaded(tmp_path, workload("web", replicas=6, pod_spec=affinity))
    assert set(nodes_of(lab, "web")) == nodes


def test_affinity_terms_are_ored_and_expressions_anded(tmp_path: Path) -> None:
    affinity = ("affinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n"
                "      nodeSelectorTerms:\n"
                "        - matchExpressions: [{key: disk, operator: Exists}, {key: topology.kubernetes.io/zone, "
                "operator: In, values: [b]}]\n"
                "        - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [n2]}]")
    lab = loaded(tmp_path, workload("web", replicas=4, pod_spec=affinity))
    assert set(nodes_of(lab, "web")) == {"n2", "n3"}


@pytest.mark.parametrize("spec,path,words", [
    ("affinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n      nodeSelectorTerms:\n"
     "        - matchExpressions: [{key: disk, operator: In, values: [nvme]}]",
     "spec.template.spec.affinity.nodeAffinity", "no node matches"),
    ("affinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n      nodeSelectorTerms:\n"
     "        - matchExpressions: [{key: disk, operator: Gt, values: ['1']}]",
     "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
     ".matchExpressions[0].operator", "not supported"),
    ("affinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n      nodeSelectorTerms:\n"
     "        - matchExpressions: [{key: disk, operator: Exists, values: [x]}]",
     "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
     ".matchExpressions[0].values", "takes no values"),
    ("affinity:\n  nodeAffinity:\n    preferredDuringSchedulingIgnoredDuringExecution: []",
     "spec.template.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution", "not supported"),
    ("topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: Never}",
     "spec.template.spec.topologySpreadConstraints[0].whenUnsatisfiable", "not a whenUnsatisfiable"),
    ("topologySpreadConstraints:\n  - {maxSkew: 0, topologyKey: kubernetes.io/hostname, "
     "whenUnsatisfiable: DoNotSchedule}", "spec.template.spec.topologySpreadConstraints[0].maxSkew", "out of range"),
    ("topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, "
     "whenUnsatisfiable: DoNotSchedule, minDomains: 2}",
     "spec.template.spec.topologySpreadConstraints[0].minDomains", "not supported"),
])
def test_placement_mistakes_are_located(tmp_path: Path, spec: str, path: str, words: str) -> None:
    e = refused(tmp_path, workload("web", replicas=2, pod_spec=spec))
    assert e.path == path and words in e.problem and e.line is not None, e


# --- kinds ------------------------------------------------------------------------------

def test_pod_keeps_its_name_and_labels_and_a_service_selects_it(tmp_path: Path) -> None:
    svc = ("---\napiVersion: v1\nkind: Service\nmetadata: {name: solo}\n"
           "spec: {selector: {app: solo}, ports: [{port: 80, targetPort: 8080}]}\n")
    lab = loaded(tmp_path, workload("solo", kind="Pod", pod_spec="nodeName: n3",
                                    container="        - {name: c, image: netlab/http-echo}\n"), svc)
    state = plan(lab, PlanOptions(python="py"))
    pod = next(p for p in state.pods if p.deployment == "solo")
    assert (pod.name, pod.node, pod.labels) == ("solo", "n3", {"app": "solo"})
    assert [e.ip for e in state.services[0].ports[0].endpoints] == [pod.ip]


def test_statefulset_pods_have_stable_ordinal_names(tmp_path: Path) -> None:
    lab = loaded(tmp_path, workload("db", replicas=3, kind="StatefulSet"))
    assert sorted(p.name for p in plan(lab, PlanOptions(python="py")).pods) == ["db-0", "db-1", "db-2"]


def test_a_pod_name_two_workloads_would_share_is_refused(tmp_path: Path) -> None:
    e = refused(tmp_path, workload("web", replicas=2, kind="StatefulSet"), workload("web-1", kind="Pod"))
    assert e.path == "metadata.name" and "web-1" in e.problem and "also" in e.problem
    e = refused(tmp_path, workload("web"), workload("web", kind="Pod"))
    assert e.path == "metadata.name" and "same name" in e.problem


def test_configmap_and_secret_are_accepted_noted_and_checked(tmp_path: Path) -> None:
    cm = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {greeting: hi}\n"
    secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: token, namespace: default}\ntype: Opaque\n" \
             "stringData: {token: x}\n"
    lab = loaded(tmp_path, cm, secret)
    assert lab.notes == ["ConfigMap default/settings is accepted and ignored: netlab does not serve ConfigMaps or "
                         "Secrets to pods",
                         "Secret default/token is accepted and ignored: netlab does not serve ConfigMaps or "
                         "Secrets to pods"]
    e = refused(tmp_path, cm.replace("\ndata:", "\ndat:"))
    assert e.path == "dat" and 'did you mean "data"' in e.fix
    e = refused(tmp_path, cm.replace("{greeting: hi}", "{greeting: [1]}"))
    assert e.path == "data.greeting" and e.line is not None


@pytest.mark.parametrize("doc,path", [
    (workload("solo", kind="Pod", pod_spec="restartPolicy: [Always]"), "spec.restartPolicy"),
    (workload("db", kind="StatefulSet").replace("  serviceName: x\n", "  serviceName: x\n  podManagementPolicy: [1]\n"),
     "spec.podManagementPolicy"),
])
def test_kubernetes_schema_applies_to_the_new_kinds(tmp_path: Path, doc: str, path: str) -> None:
    e = refused(tmp_path, doc)
    assert e.path == path and e.line is not None, e
