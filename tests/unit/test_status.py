"""`netlab status` without root: mesh membership and its reason, policies, filters
(-n, kubectl's -l), pod names, and the rendered tables."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from netlab import topology
from netlab.cli.lifecycle import render_status
from netlab.errors import NetlabError
from netlab.kernel import query
from netlab.kernel.ownership import LabRecord
from netlab.model import Lab
from netlab.plan import describe
from netlab.plan.modes.base import MeshMode, PlanContext
from netlab.plan.options import PlanOptions
from netlab.plan.planner import plan
from netlab.snapshot import Workload
from netlab.topology.selector import parse

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = PlanOptions(start_processes=False)


def _summary(path: str, **replace: Any) -> dict[str, Any]:
    lab = topology.load([ROOT / path])
    lab = dataclasses.replace(lab, **replace) if replace else lab
    return query.summarize(plan(lab, OPTIONS), lab)


def _pods(summary: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {f"{p['namespace']}/{p['name']}": p["mesh"] for p in summary["pods"]}


# -- membership ---------------------------------------------------------------------------


def test_ambient_and_out_of_mesh_pods_say_why() -> None:
    pods = _pods(_summary("topologies/ambient-bookinfo.yaml"))
    assert pods["bookinfo/ratings-0"] == {"mode": "ambient",
                                          "reason": "namespace bookinfo has istio.io/dataplane-mode=ambient"}
    assert pods["outside/sleep-0"]["mode"] == "none"
    assert "namespace outside" in pods["outside/sleep-0"]["reason"]


def test_a_waypoint_pod_is_in_the_waypoint_mode() -> None:
    pods = _pods(_summary("topologies/waypoint.yaml"))
    assert pods["mesh/waypoint-0"]["mode"] == "waypoint"
    assert "Gateway mesh/waypoint" in pods["mesh/waypoint-0"]["reason"]


def test_a_pod_opting_out_of_an_ambient_namespace_says_so() -> None:
    lab = topology.load([ROOT / "topologies/ambient-bookinfo.yaml"])
    deps = [dataclasses.replace(d, labels={**d.labels, "istio.io/dataplane-mode": "none"})
            if (d.namespace, d.name) == ("bookinfo", "sleep") else d for d in lab.deployments]
    lab = dataclasses.replace(lab, deployments=deps)
    pods = _pods(query.summarize(plan(lab, OPTIONS), lab))
    assert pods["bookinfo/sleep-0"] == {"mode": "none", "reason": "opt-out: pod label istio.io/dataplane-mode=none"}
    assert pods["bookinfo/ratings-0"]["mode"] == "ambient"


class _Canary(MeshMode):
    """A mode the status code has never heard of."""

    name = "canary"

    def enrolls(self, lab: Lab, pod: Workload) -> str | None:
        return "pod label track=canary" if pod.labels.get("track") == "canary" else None

    def plan_kernel(self, ctx: PlanContext, pods: list[Workload]) -> None:  # pragma: no cover
        pass

    def plan_processes(self, ctx: PlanContext, pods: list[Workload]) -> None:  # pragma: no cover
        pass


def test_any_registered_mode_is_shown_with_its_own_reason() -> None:
    lab = Lab(name="x", nodes=[])
    pod = Workload("ns", "p-0", labels={"track": "canary"}, mode="canary")
    assert describe.membership(lab, pod, {"canary": _Canary()}) == ("canary", "pod label track=canary")


def test_policies_are_listed_with_what_they_do() -> None:
    pols = {p["name"]: p for p in _summary("topologies/waypoint.yaml")["policies"]}
    assert pols["get-only"]["summary"] == "ALLOW on Service/guarded (1 rule)"
    assert pols["no-plaintext-tcp"]["summary"] == "DENY app=echo (1 rule)"


# -- filters ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,labels,want", [
    ("app=ratings", {"app": "ratings"}, True),
    ("app==ratings", {"app": "reviews"}, False),
    ("app!=ratings", {}, True),  # != matches objects without the key, as in Kubernetes
    ("version in (v1, v2)", {"version": "v2"}, True),
    ("version notin (v1,v2)", {"version": "v2"}, False),
    ("version notin (v1,v2)", {}, True),
    ("app", {"app": ""}, True),
    ("!canary", {"canary": "x"}, False),
    ("app=ratings,!canary,tier in (a)", {"app": "ratings", "tier": "a"}, True),
    ("example.com/team=x", {"example.com/team": "x"}, True),
])
def test_selector_matches_as_kubectl(text: str, labels: dict[str, str], want: bool) -> None:
    assert parse(text).matches(labels) is want


@pytest.mark.parametrize("text,says", [
    ("version in v1", "parentheses"), ("a b", "not a requirement"), ("app=ratings,", "empty requirement"),
    ("x in (a", "never closed"), ("x in ()", "empty value list"), ("a=b c", "63 letters"),
])
def test_a_bad_selector_is_one_clear_error(text: str, says: str) -> None:
    with pytest.raises(NetlabError, match=says) as e:
        parse(text)
    assert "e.g." in str(e.value)


def test_namespace_and_selector_filter_pods_services_and_policies() -> None:
    s = _summary("topologies/ambient-bookinfo.yaml")
    out = query.filtered(s, namespace="outside")
    assert {p["namespace"] for p in out["pods"]} == {"outside"} and out["nodes"] == s["nodes"]
    out = query.filtered(s, selector="app=ratings")
    assert [p["name"] for p in out["pods"]] == ["ratings-0", "ratings-1"]
    assert [f"{x['namespace']}/{x['name']}" for x in out["services"]] == ["bookinfo/ratings"]


# -- pod names ----------------------------------------------------------------------------


def _record(summary: dict[str, Any]) -> LabRecord:
    return LabRecord(lab="x", status="ready", builder_pid=0, created=0.0, summary=summary)


def test_a_deployment_of_several_replicas_says_pick_one_of() -> None:
    record = _record(_summary("topologies/ambient-bookinfo.yaml"))
    for ref in ("ratings", "bookinfo/ratings"):
        with pytest.raises(NetlabError, match=r"pick one of: bookinfo/ratings-0, bookinfo/ratings-1$"):
            query.find_pod(record, ref)
    assert query.find_pod(record, "bookinfo/ratings-1")["name"] == "ratings-1"
    assert query.find_pod(record, "ratings-1")["name"] == "ratings-1"


# -- rendering ----------------------------------------------------------------------------


def _rendered(s: dict[str, Any], wide: bool) -> str:
    buf = io.StringIO()
    render_status(s, wide=wide, o=Console(file=buf, width=400, color_system=None))
    return buf.getvalue()


def test_status_tables_show_mesh_policies_and_process_health() -> None:
    s = _summary("topologies/waypoint.yaml")
    s.update(status="degraded", processes=[
        {"name": "ztunnel/node-1", "pid": 7, "netns": "nl-x-node-node-1", "log": "/l", "alive": False,
         "restarts": 2, "state": "down", "supervised": True, "lastExit": "killed by SIGKILL"}])
    text = _rendered(s, wide=False)
    row = next(line for line in text.splitlines() if "mesh/waypoint-0" in line)
    assert "waypoint" in row.split("mesh/waypoint-0", 1)[1] and "Gateway mesh/waypoint" in row
    outside = next(line for line in text.splitlines() if "outside/sleep-0" in line)
    assert " none " in outside
    assert "DENY app=echo (1 rule)" in text
    zt = next(line for line in text.splitlines() if "ztunnel/node-1" in line)
    assert "down" in zt and "killed by SIGKILL" in zt and " 2 " in zt
    assert "nl-x-node-node-1" not in text  # netns only with -o wide
    wide = _rendered(s, wide=True)
    assert "nl-x-node-node-1" in wide and "netlab/http-echo" in wide
