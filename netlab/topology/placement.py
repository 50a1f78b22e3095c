"""Where each pod runs: the default scheduler's rules, in one place for the loader and the planner.

The loader schedules once to refuse what cannot be placed (a DoNotSchedule spread
constraint no node can satisfy) with an error at the constraint; the planner
schedules again, with the same function, to build the pods, so the two never disagree.

What is modelled, as kube-scheduler does it:

- filters: `nodeName`; `nodeSelector` (every pair a node label); required node
  affinity (`affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`):
  a node must match one term, and a term matches when every matchExpression does
  (In, NotIn, Exists, DoesNotExist); `topologySpreadConstraints` with
  `whenUnsatisfiable: DoNotSchedule`: placing the pod in a domain must keep
  `count(domain) + 1 - min(count over domains) <= maxSkew`, where a domain is a value
  of the node label `topologyKey` among the eligible nodes and count is the pods in the
  same namespace that match the constraint's labelSelector. A node without the label
  is not a candidate for that constraint (nodeAffinityPolicy Honor, the default).
- scoring, best first: the smallest skew for `ScheduleAnyway` constraints; then the
  fewest pods of the same workload on the node (the default scheduler spreads a
  workload's replicas, as its default spread constraint on kubernetes.io/hostname
  does); then the least-loaded node (fewest pods); then Lab order.

Every node carries `kubernetes.io/hostname: <node name>`, as the kubelet labels it.
Pods are placed one at a time, in file order, each replica seeing the ones before.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlab.model import Deployment, Lab, Node, NodeRequirement, SpreadConstraint

HOSTNAME_LABEL = "kubernetes.io/hostname"
ZONE_LABEL = "topology.kubernetes.io/zone"


class Unschedulable(Exception):
    """No node can take a pod of `deployment`; `constraint` is the spread constraint's
    index when one DoNotSchedule constraint is why, else None (no node passes the filters)."""

    def __init__(self, deployment: Deployment, replica: int, constraint: int | None, reason: str) -> None:
        super().__init__(reason)
        self.deployment, self.replica, self.constraint, self.reason = deployment, replica, constraint, reason


def node_labels(node: Node) -> dict[str, str]:
    """The node's labels, with the hostname label the kubelet adds."""
    return {HOSTNAME_LABEL: node.name, **node.labels}


def matches(node: Node, selector: dict[str, str]) -> bool:
    """Kubernetes nodeSelector semantics: every key/value pair must be a node label."""
    labels = node_labels(node)
    return all(labels.get(k) == v for k, v in selector.items())


def requirement_holds(labels: dict[str, str], req: NodeRequirement) -> bool:
    present = req.key in labels
    if req.operator == "In":
        return present and labels[req.key] in req.values
    if req.operator == "NotIn":
        return not present or labels[req.key] not in req.values
    if req.operator == "Exists":
        return present
    if req.operator == "DoesNotExist":
        return not present
    raise ValueError(f"unknown operator {req.operator!r}")  # the loader refuses others


def affinity_allows(node: Node, terms: tuple[tuple[NodeRequirement, ...], ...]) -> bool:
    if not terms:
        return True
    labels = node_labels(node)
    return any(all(requirement_holds(labels, r) for r in term) for term in terms)


def eligible_nodes(lab: Lab, deployment: Deployment) -> list[Node]:
    """Nodes in Lab order that pass the node filters (spread constraints apart)."""
    return nodes_for(lab.nodes, deployment)


def nodes_for(nodes: list[Node], deployment: Deployment) -> list[Node]:
    if deployment.node_name:
        chosen = [n for n in nodes if n.name == deployment.node_name]
    else:
        chosen = [n for n in nodes if matches(n, deployment.node_selector)]
    return [n for n in chosen if affinity_allows(n, deployment.affinity)]


@dataclass
class _Placed:
    node: str
    namespace: str
    labels: dict[str, str]
    workload: tuple[str, str]


def schedule(nodes: list[Node], deployments: list[Deployment]) -> list[list[str]]:
    """The node of every replica of every deployment, in order; Unschedulable if one has none."""
    placed: list[_Placed] = []
    order = {n.name: i for i, n in enumerate(nodes)}
    out: list[list[str]] = []
    for dep in deployments:
        eligible = nodes_for(nodes, dep)
        if not eligible:
            raise Unschedulable(dep, 0, None, "no node passes nodeName, nodeSelector and node affinity")
        mine: list[str] = []
        for replica in range(dep.replicas):
            node = _pick(dep, replica, eligible, placed, order)
            placed.append(_Placed(node.name, dep.namespace, dep.labels, (dep.namespace, dep.name)))
            mine.append(node.name)
        out.append(mine)
    return out


def _pick(dep: Deployment, replica: int, eligible: list[Node], placed: list[_Placed],
          order: dict[str, int]) -> Node:
    candidates = list(eligible)
    for i, c in enumerate(dep.spread):
        if c.when_unsatisfiable != "DoNotSchedule":
            continue
        ok = [n for n in candidates if _skew(dep, c, n, eligible, placed) <= c.max_skew]
        if not ok:
            raise Unschedulable(dep, replica, i, _why(dep, c, eligible, placed))
        candidates = ok

    def score(n: Node) -> tuple[int, int, int, int]:
        anyway = sum(_skew(dep, c, n, eligible, placed) for c in dep.spread
                     if c.when_unsatisfiable == "ScheduleAnyway")
        same = sum(1 for p in placed if p.node == n.name and p.workload == (dep.namespace, dep.name))
        load = sum(1 for p in placed if p.node == n.name)
        return anyway, same, load, order[n.name]

    return min(candidates, key=score)


def _counts(dep: Deployment, c: SpreadConstraint, eligible: list[Node],
            placed: list[_Placed]) -> dict[str, int]:
    """Matching pods per domain (a value of the topology key among the eligible nodes)."""
    domain_of = {n.name: node_labels(n).get(c.topology_key) for n in eligible}
    counts = {d: 0 for d in domain_of.values() if d is not None}
    for p in placed:
        d = domain_of.get(p.node)
        if d is not None and p.namespace == dep.namespace and _selects(c, p.labels):
            counts[d] += 1
    return counts


def _selects(c: SpreadConstraint, labels: dict[str, str]) -> bool:
    return c.match_labels is not None and all(labels.get(k) == v for k, v in c.match_labels.items())


def _skew(dep: Deployment, c: SpreadConstraint, node: Node, eligible: list[Node],
          placed: list[_Placed]) -> int:
    """The skew after placing this pod on `node`; a node without the key never fits."""
    domain = node_labels(node).get(c.topology_key)
    if domain is None:
        return 1 << 30
    counts = _counts(dep, c, eligible, placed)
    return counts[domain] + (1 if _selects(c, dep.labels) else 0) - min(counts.values())


def _why(dep: Deployment, c: SpreadConstraint, eligible: list[Node], placed: list[_Placed]) -> str:
    counts = _counts(dep, c, eligible, placed)
    if not counts:
        return (f"no eligible node has the label {c.topology_key!r} "
                f"(eligible: {', '.join(n.name for n in eligible)})")
    shown = ", ".join(f"{d}: {n}" for d, n in sorted(counts.items()))
    return (f"every {c.topology_key} domain would exceed maxSkew {c.max_skew} "
            f"(matching pods per domain: {shown})")
