"""The Prometheus addon's plan: targets from the modes' process specs, Istio's relabelling, routes.

The relabel rules are the `kubernetes-pods` job of istio/istio samples/addons/prometheus.yaml;
`promtool check config` (Debian's) judges the generated file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from netlab import topology
from netlab.model import PrometheusSpec
from netlab.plan.addons import prometheus
from netlab.plan.planner import PlanOptions, plan
from netlab.telemetry.promclient import format_result, parse_duration, range_step
from netlab.errors import NetlabError

REPO = Path(__file__).resolve().parents[2]
TOPO = REPO / "topologies" / "ambient-bookinfo.yaml"


def _lab(enabled: bool = True, interval: str = "1s"):  # type: ignore[no-untyped-def]
    return dataclasses.replace(topology.load([TOPO]), prometheus=PrometheusSpec(enabled, interval))


def test_off_by_default_plans_nothing() -> None:
    state = plan(topology.load([TOPO]))
    assert not [p for p in state.processes if p.name == prometheus.NAME]
    assert not [r for r in state.routes if r.netns.endswith("-fabric")]


def test_enable_is_what_up_prometheus_does() -> None:
    lab = prometheus.enable(topology.load([TOPO]))
    assert lab.prometheus.enabled and lab.prometheus.scrape_interval == "1s"


def test_every_ztunnel_is_a_target_labelled_as_its_pod() -> None:
    state = plan(_lab())
    zts = {p.name: p for p in state.processes if p.name.startswith("ztunnel/")}
    targets = prometheus.targets(state)
    nodes = {n.name: n.ip for n in state.nodes}
    assert sorted(t.address for t in targets) == sorted(f"{nodes[n.split('/')[1]]}:15020" for n in zts)
    meta = prometheus.meta_labels(targets[0])
    assert meta["__meta_kubernetes_pod_label_app"] == "ztunnel"
    assert meta["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
    assert meta["__meta_kubernetes_namespace"] == "istio-system"


def test_config_is_istios_kubernetes_pods_job() -> None:
    state = plan(_lab(interval="2s"))
    proc = next(p for p in state.processes if p.name == prometheus.NAME)
    cfg = json.loads(proc.config or "")
    assert cfg["global"]["scrape_interval"] == "2s"
    (job,) = cfg["scrape_configs"]
    assert job["job_name"] == "kubernetes-pods" and job["honor_labels"] is True
    actions = [(r["action"], r.get("regex")) for r in job["relabel_configs"]]
    assert ("labelmap", "__meta_kubernetes_pod_label_(.+)") in actions
    assert proc.netns.endswith("-fabric") and proc.signals_ready
    assert "--storage" in proc.argv and proc.argv[proc.argv.index("--storage") + 1].startswith("/run/netlab/")


def test_fabric_routes_to_every_pod_range() -> None:
    state = plan(_lab())
    fabric = [r for r in state.routes if r.netns.endswith("-fabric")]
    assert sorted((r.dst, r.via) for r in fabric) == sorted((n.pod_cidr, n.ip) for n in state.nodes)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_config(tmp_path: Path) -> None:
    proc = next(p for p in plan(_lab()).processes if p.name == prometheus.NAME)
    path = tmp_path / "prometheus.yml"
    path.write_text(proc.config or "")
    res = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


def test_no_processes_no_prometheus() -> None:
    state = plan(_lab(), PlanOptions(start_processes=False))
    assert not [p for p in state.processes if p.name == prometheus.NAME]


@pytest.mark.parametrize("text,seconds", [("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("90", 90)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_is_one_error() -> None:
    with pytest.raises(NetlabError, match="not a duration"):
        parse_duration("5 minutes")


def test_range_step_and_format() -> None:
    assert range_step(300) == 1 and range_step(3600) == 14
    lines = format_result([{"metric": {"__name__": "up", "job": "j"}, "value": [1, "1"]}])
    assert lines == ['up{job="j"} 1']


def test_fabric_routes_once_when_a_mode_already_routes_the_pod_ranges() -> None:
    """A waypoint (or sidecar) mode routes the fabric to the pod ranges for the CA; the addon
    must not plan the same route again (the kernel refuses a duplicate with EEXIST)."""
    lab = dataclasses.replace(topology.load([REPO / "topologies" / "waypoint.yaml"]),
                              prometheus=PrometheusSpec(True, "1s"))
    state = plan(lab)
    fabric = [(r.netns, r.dst) for r in state.routes if r.netns.endswith("-fabric")]
    assert sorted(fabric) == sorted(set(fabric)) and len(fabric) == len(state.nodes)


def test_the_waypoint_is_scraped_as_istios_template_annotates_it() -> None:
    """istio files/waypoint.yaml: prometheus.io/port 15020, prometheus.io/path /stats/prometheus;
    its pod labels become series labels (Kiali finds waypoints by gateway.istio.io/managed)."""
    lab = dataclasses.replace(topology.load([REPO / "topologies" / "waypoint.yaml"]),
                              prometheus=PrometheusSpec(True, "1s"))
    state = plan(lab)
    pod = next(p for p in state.pods if p.name == "waypoint-0")
    job = prometheus.config(state, "1s")["scrape_configs"][0]
    (wp,) = [sc for sc in job["static_configs"] if sc["labels"]["__meta_kubernetes_pod_name"] == "waypoint-0"]
    assert wp["targets"] == [f"{pod.ip}:15020"]
    assert wp["labels"]["__meta_kubernetes_pod_annotation_prometheus_io_path"] == "/stats/prometheus"
    assert wp["labels"]["__meta_kubernetes_namespace"] == "mesh"
    assert wp["labels"]["__meta_kubernetes_pod_label_gateway_istio_io_managed"] == "istio.io-mesh-controller"
    assert "__meta_kubernetes_pod_label_app" not in wp["labels"]


def test_sidecars_are_scraped_with_their_pod_labels() -> None:
    """The injector's Prometheus merge: prometheus.io/port 15020, path /stats/prometheus; the
    pod's labels (app, version, the tunnel label) become series labels, as in a cluster."""
    lab = dataclasses.replace(topology.load([REPO / "tests" / "kernel" / "topologies" / "sidecar.yaml"]),
                              prometheus=PrometheusSpec(True, "1s"))
    state = plan(lab)
    sidecars = [p for p in state.pods if p.mode == "sidecar"]
    assert sidecars
    job = prometheus.config(state, "1s")["scrape_configs"][0]
    by_pod = {(sc["labels"]["__meta_kubernetes_namespace"], sc["labels"]["__meta_kubernetes_pod_name"]): sc
              for sc in job["static_configs"]}
    for pod in sidecars:
        sc = by_pod[(pod.namespace, pod.name)]
        assert sc["targets"] == [f"{pod.ip}:15020"]
        assert sc["labels"]["__meta_kubernetes_pod_annotation_prometheus_io_path"] == "/stats/prometheus"
        if "app" in pod.labels:
            assert sc["labels"]["__meta_kubernetes_pod_label_app"] == pod.labels["app"]


def _with_prometheus_spec(tmp_path: Path, spec: str) -> Path:
    text = TOPO.read_text()
    lab_doc = text.index("kind: Lab")
    at = text.index("\nspec:\n", lab_doc) + len("\nspec:\n")
    path = tmp_path / "lab.yaml"
    path.write_text(text[:at] + f"  prometheus: {spec}\n" + text[at:])
    return path


def test_up_waits_for_every_target_unless_the_lab_says_not_to(tmp_path: Path) -> None:
    def argv(lab):  # type: ignore[no-untyped-def]
        return next(p.argv for p in plan(lab).processes if p.name == prometheus.NAME)

    default = topology.load([_with_prometheus_spec(tmp_path, "{enabled: true}")])
    assert default.prometheus.wait_for_targets and "--no-wait-for-targets" not in argv(default)
    off = topology.load([_with_prometheus_spec(tmp_path, "{enabled: true, waitForTargets: false}")])
    assert not off.prometheus.wait_for_targets and "--no-wait-for-targets" in argv(off)


def test_wait_for_targets_is_a_boolean_as_the_schema_says(tmp_path: Path) -> None:
    with pytest.raises(NetlabError, match="waitForTargets"):
        topology.load([_with_prometheus_spec(tmp_path, '{enabled: true, waitForTargets: "no"}')])
