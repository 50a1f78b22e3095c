"""Addons: what a lab can ask for besides the mesh (a Prometheus today).

An addon is not a mesh mode: it enrolls no pods and changes no pod's traffic. It reads
the state the modes planned (their processes' `scrape` targets, for Prometheus) and adds
processes of its own, so the planner runs the addons after the modes.
"""

from __future__ import annotations

from netlab.plan.addons import prometheus
from netlab.plan.modes.base import PlanContext

__all__ = ["plan_addons"]


def plan_addons(ctx: PlanContext) -> None:
    """Every addon the lab asks for, in a fixed order."""
    if ctx.lab.prometheus.enabled:
        prometheus.plan(ctx)
