"""What `netlab status` says about each pod and policy, in words: pure, from the model.

Why here: the mesh modes (netlab/plan/modes/) decide who is enrolled and say why
(`MeshMode.enrolls`); the status needs the same answer, and for a pod no mode took,
the reason it stayed out (an opt-out label, or no label at all). Asking the registry
keeps this true for whatever modes are registered: a new mode's pods show its name
and its own reason without a change here.
"""

from __future__ import annotations

from typing import Any

from netlab import mesh
from netlab.model import Lab, Resource
from netlab.plan.modes import REGISTRY, MeshMode
from netlab.snapshot import Workload

NONE = "none"  # the mesh column of a pod no mode enrolled
POLICY_KINDS = ("AuthorizationPolicy", "PeerAuthentication")


def membership(lab: Lab, pod: Workload, registry: dict[str, MeshMode] = REGISTRY) -> tuple[str, str]:
    """(mode, reason): the mode that enrolled `pod` (`pod.mode`, set by the planner) and why,
    or ("none", why not)."""
    mode = registry.get(pod.mode) if pod.mode else None
    if mode is not None:
        return pod.mode, mode.enrolls(lab, pod) or f"enrolled by the {pod.mode} mode"
    return NONE, why_not(lab, pod)


def why_not(lab: Lab, pod: Workload) -> str:
    """Why no mode took `pod`: the opt-out that keeps it out, else the missing label."""
    labels = pod.labels
    ns = lab.namespace(pod.namespace)
    ns_labels = ns.labels if ns else {}
    if labels.get(mesh.DATAPLANE_MODE_LABEL) == NONE:
        return f"opt-out: pod label {mesh.DATAPLANE_MODE_LABEL}=none"
    if labels.get(mesh.SIDECAR_INJECT) == "false" and ns_labels.get(mesh.INJECTION_LABEL) == "enabled":
        return f'opt-out: pod label {mesh.SIDECAR_INJECT}="false"'
    injection = ns_labels.get(mesh.INJECTION_LABEL)
    if injection is not None and injection != "enabled":
        return f"opt-out: namespace {pod.namespace} has {mesh.INJECTION_LABEL}={injection}"
    return f"no mesh label on the pod or on namespace {pod.namespace}"


def policies(lab: Lab) -> list[dict[str, Any]]:
    """Every AuthorizationPolicy and PeerAuthentication, with what it does in a few words."""
    return [{"kind": r.kind, "namespace": r.namespace, "name": r.name, "summary": policy_summary(r),
             "labels": dict(r.labels)}
            for r in lab.resources if r.kind in POLICY_KINDS]


def policy_summary(r: Resource) -> str:
    """`ALLOW app=ratings (2 rules)`, `STRICT namespace-wide`, `DENY on waypoint Service/x`."""
    spec = r.spec or {}
    if r.kind == "PeerAuthentication":
        mode = ((spec.get("mtls") or {}).get("mode")) or "UNSET"
        ports = spec.get("portLevelMtls") or {}
        extra = "; ports " + ", ".join(f"{p}: {(m or {}).get('mode', 'UNSET')}" for p, m in ports.items()) \
            if ports else ""
        return f"{mode} {_scope(spec, r)}{extra}"
    action = spec.get("action") or "ALLOW"
    rules = spec.get("rules")
    n = "no rules" if not rules else f"{len(rules)} rule{'s' if len(rules) != 1 else ''}"
    if not rules and action == "ALLOW":
        n = "no rules: allows nothing"  # Istio: an ALLOW policy matching nothing denies all it selects
    elif not rules:
        n = "no rules: matches nothing"
    return f"{action} {_scope(spec, r)} ({n})"


def _scope(spec: dict[str, Any], r: Resource) -> str:
    refs = spec.get("targetRefs") or ([spec["targetRef"]] if spec.get("targetRef") else [])
    if refs:
        return "on " + ", ".join(f"{ref.get('kind', '?')}/{ref.get('name', '?')}" for ref in refs)
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    if match:
        return ",".join(f"{k}={v}" for k, v in sorted(match.items()))
    return "mesh-wide" if r.namespace == mesh.ROOT_NAMESPACE else "namespace-wide"
