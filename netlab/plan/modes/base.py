"""What a mesh mode is to the planner: who it enrolls and why, and what it adds for them.

Why a contract: ambient, the sidecar and the waypoint each decide which pods are theirs,
which iptables rules and routes those pods (and their nodes) get, and which proxy
processes run with which config snapshot. The planner knows none of that; it asks
each registered mode in turn (`netlab.plan.modes.REGISTRY`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from netlab.model import Lab
from netlab.plan.options import PlanOptions
from netlab.plan.profile import IstioProfile
from netlab.plan.state import DesiredState
from netlab.snapshot import Workload


@dataclass(frozen=True)
class PlanContext:
    """What every mode plans from: the lab, the state so far, how to plan, the Istio profile."""

    lab: Lab
    state: DesiredState
    options: PlanOptions
    profile: IstioProfile


class MeshMode(ABC):
    """One way of putting pods in the mesh. Subclasses are registered by `name`."""

    name: str

    @abstractmethod
    def enrolls(self, lab: Lab, pod: Workload) -> str | None:
        """Why `pod` is in this mode, in plain words; None if it is not."""

    def expand(self, lab: Lab, profile: IstioProfile) -> Lab:
        """The lab with the objects the mode's controller would create (a waypoint's
        Deployment, Service and ServiceAccount), before pods are placed. Default: none."""
        return lab

    def inject(self, ctx: PlanContext, pod: Workload) -> Workload:
        """`pod` as the mode's admission webhook leaves it (the sidecar injector's labels),
        once it is enrolled and before any mode plans. Default: unchanged."""
        return pod

    @abstractmethod
    def plan_kernel(self, ctx: PlanContext, pods: list[Workload]) -> None:
        """Add the rulesets, ip rules, routes and ipsets the mode's `pods` need."""

    @abstractmethod
    def plan_processes(self, ctx: PlanContext, pods: list[Workload]) -> None:
        """Add the mode's processes (proxies, control plane), each with its config snapshot."""
