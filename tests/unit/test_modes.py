"""Mesh modes are a registry the planner walks; the Istio version is a profile, decoded once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from netlab import topology
from netlab.model import Lab
from netlab.plan import modes
from netlab.plan.modes import MeshMode, PlanContext, enroll, plan_modes
from netlab.plan.modes.ambient import AmbientMode, enrollment
from netlab.plan.options import PlanOptions
from netlab.plan.planner import plan
from netlab.plan.profile import PROFILES, profile
from netlab.plan.state import DesiredState, RulesetSpec
from netlab.snapshot import ProxySnapshot, Workload, from_json

REPO = Path(__file__).resolve().parents[2]
TOPO = REPO / "topologies" / "ambient-bookinfo.yaml"


class Recorder(MeshMode):
    """A mode that enrolls pods carrying its label and records what it is asked to plan."""

    def __init__(self, name: str, label: str) -> None:
        self.name, self.label = name, label
        self.kernel: list[list[str]] = []
        self.processes: list[list[str]] = []

    def enrolls(self, lab: Lab, pod: Workload) -> str | None:
        return f"label {self.label}" if self.label in pod.labels else None

    def plan_kernel(self, ctx: PlanContext, pods: list[Workload]) -> None:
        self.kernel.append([p.name for p in pods])
        ctx.state.rulesets += [RulesetSpec(p.netns, "", owner=self.name) for p in pods]

    def plan_processes(self, ctx: PlanContext, pods: list[Workload]) -> None:
        self.processes.append([p.name for p in pods])


def _ctx(pods: list[Workload], start_processes: bool = True) -> PlanContext:
    state = DesiredState(lab="t", pods=list(pods))
    return PlanContext(Lab(name="t", nodes=[]), state, PlanOptions(start_processes=start_processes),
                       profile("1.24+"))


PODS = [Workload("ns", "a-0", labels={"x": "1"}), Workload("ns", "b-0", labels={"x": "1", "y": "1"}),
        Workload("ns", "c-0", labels={"y": "1"}), Workload("ns", "d-0")]


def test_ambient_is_registered() -> None:
    assert isinstance(modes.REGISTRY["ambient"], AmbientMode)


def test_first_mode_that_enrolls_a_pod_owns_it() -> None:
    x, y = Recorder("x-mode", "x"), Recorder("y-mode", "y")
    ctx = _ctx(PODS)
    plan_modes(ctx, {"x-mode": x, "y-mode": y})
    assert {p.name: p.mode for p in ctx.state.pods} == {"a-0": "x-mode", "b-0": "x-mode",
                                                         "c-0": "y-mode", "d-0": ""}
    assert x.kernel == [["a-0", "b-0"]] and y.kernel == [["c-0"]]
    assert x.processes == [["a-0", "b-0"]] and y.processes == [["c-0"]]
    assert {r.owner for r in ctx.state.rulesets} == {"x-mode", "y-mode"}


def test_a_mode_with_no_pods_adds_nothing_and_processes_wait_for_the_option() -> None:
    x, z = Recorder("x-mode", "x"), Recorder("z-mode", "z")
    ctx = _ctx(PODS, start_processes=False)
    plan_modes(ctx, {"z-mode": z, "x-mode": x})
    assert z.kernel == [] and z.processes == []
    assert x.kernel == [["a-0", "b-0"]] and x.processes == []


def test_enroll_says_nothing_about_unclaimed_pods() -> None:
    pod = Workload("ns", "p-0")
    assert enroll(Lab(name="t", nodes=[]), pod, {"x-mode": Recorder("x-mode", "x")}) is pod


def test_ambient_enrollment_reasons() -> None:
    lab = topology.load([str(TOPO)])
    pod = Workload("bookinfo", "p-0")
    assert enrollment(lab, pod) == "namespace bookinfo has istio.io/dataplane-mode=ambient"
    opt_out = dataclasses.replace(pod, labels={"istio.io/dataplane-mode": "none"})
    assert enrollment(lab, opt_out) is None
    opt_in = Workload("outside", "q-0", labels={"istio.io/dataplane-mode": "ambient"})
    assert enrollment(lab, opt_in) == "pod label istio.io/dataplane-mode=ambient"


def test_profiles_say_what_each_version_changes() -> None:
    old, new = profile("1.23"), profile("1.24+")
    assert (old.ambient_capture, new.ambient_capture) == ("tproxy", "redirect")
    assert (old.bypass_inbound_supported, new.bypass_inbound_supported) == (False, True)
    assert old.listener_transparent and not new.listener_transparent
    assert set(PROFILES) == {"1.23", "1.24+"}
    with pytest.raises(ValueError, match="unknown Istio version '1.22'"):
        profile("1.22")


@pytest.mark.parametrize("version,capture,in_pod", [("1.23", "tproxy", False),
                                                     ("1.24+", "redirect", True)])
def test_ztunnel_snapshot_carries_the_profile(tmp_path: Path, version: str, capture: str,
                                              in_pod: bool) -> None:
    f = tmp_path / "lab.yaml"
    f.write_text(TOPO.read_text().replace('version: "1.24+"', f'version: "{version}"'))
    state = plan(topology.load([str(f)]), PlanOptions())
    z = next(p for p in state.processes if p.name.startswith("ztunnel/"))
    assert z.config is not None
    snap = from_json(ProxySnapshot, z.config)
    assert (snap.capture, snap.dns.forward_in_pod) == (capture, in_pod)
    assert version not in z.config  # the version string stays in plan
