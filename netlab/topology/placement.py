"""Which nodes may run a Deployment's pods: the one rule the loader and the planner share.

The loader uses it to reject a nodeSelector that matches nothing; the planner uses it to
spread replicas round-robin over the result. Keeping the rule in one place means the
two can never disagree about what a selector matches.
"""

from __future__ import annotations

from netlab.model import Deployment, Lab, Node


def matches(node: Node, selector: dict[str, str]) -> bool:
    """Kubernetes nodeSelector semantics: every key/value pair must be a node label."""
    return all(node.labels.get(k) == v for k, v in selector.items())


def eligible_nodes(lab: Lab, deployment: Deployment) -> list[Node]:
    """Nodes in Lab order: the nodeName node, else the nodeSelector matches, else all nodes."""
    return nodes_for(lab.nodes, deployment)


def nodes_for(nodes: list[Node], deployment: Deployment) -> list[Node]:
    if deployment.node_name:
        return [n for n in nodes if n.name == deployment.node_name]
    return [n for n in nodes if matches(n, deployment.node_selector)]
