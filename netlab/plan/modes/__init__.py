"""The mesh modes netlab plans, by name: a new mode (sidecar, waypoint) is one more entry.

Order matters: a pod belongs to the first mode that enrolls it, as a pod with an
injected sidecar is left alone by istio-cni's ambient capture.
"""

from __future__ import annotations

import dataclasses

from netlab.model import Lab
from netlab.plan.modes.ambient import AmbientMode
from netlab.plan.modes.base import MeshMode, PlanContext
from netlab.plan.modes.sidecar import SidecarMode
from netlab.plan.modes.waypoint import WaypointMode
from netlab.plan.profile import IstioProfile
from netlab.snapshot import Workload

# The waypoint first: it attaches waypoints to Services and pods before others write snapshots.
# The sidecar before ambient: a pod with a sidecar is left alone by ambient capture.
REGISTRY: dict[str, MeshMode] = {m.name: m for m in (WaypointMode(), SidecarMode(), AmbientMode(),)}


def expand_model(lab: Lab, profile: IstioProfile, registry: dict[str, MeshMode] = REGISTRY) -> Lab:
    """The lab plus what each mode's controller creates (e.g. a waypoint's Deployment)."""
    for mode in registry.values():
        lab = mode.expand(lab, profile)
    return lab


def enroll(lab: Lab, pod: Workload, registry: dict[str, MeshMode] = REGISTRY) -> Workload:
    """`pod` with `mode` set to the first mode that enrolls it (unchanged if none does)."""
    for name, mode in registry.items():
        if mode.enrolls(lab, pod) is not None:
            return dataclasses.replace(pod, mode=name)
    return pod


def plan_modes(ctx: PlanContext, registry: dict[str, MeshMode] = REGISTRY) -> None:
    """Enroll every pod, then let each mode with pods add its kernel state and processes."""
    ctx.state.pods[:] = [enroll(ctx.lab, p, registry) for p in ctx.state.pods]
    ctx.state.pods[:] = [registry[p.mode].inject(ctx, p) if p.mode in registry else p
                         for p in ctx.state.pods]
    for name, mode in registry.items():
        pods = [p for p in ctx.state.pods if p.mode == name]
        if not pods:
            continue
        mode.plan_kernel(ctx, pods)
        if ctx.options.start_processes:
            mode.plan_processes(ctx, pods)


__all__ = ["REGISTRY", "MeshMode", "PlanContext", "enroll", "expand_model", "plan_modes"]
