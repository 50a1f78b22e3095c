"""The Prometheus addon: Debian's `prometheus` in the lab's fabric netns, scraping the mesh.

Why the fabric netns: it is the lab's own "host network". It already reaches every node
on the fabric bridge (ztunnel's 15020 listens in the node netns), and one route per node
pod range lets it reach pod addresses too (a sidecar's or a waypoint's 15020), while
nothing of it lives in the host's namespace. Its storage is in the lab's state dir, so
`netlab down` removes it with the lab.

Which targets: every process the modes planned with a `scrape` target (ProcessSpec.scrape).
How they are labelled: Istio's sample config (istio/istio `samples/addons/prometheus.yaml`,
job `kubernetes-pods`, `honor_labels: true`) relabels Kubernetes pod metadata. netlab has
no Kubernetes API to discover pods from, so each target is a static config carrying the
`__meta_kubernetes_pod_*` labels the pod discovery would have set, and the job's own
relabel rules run on them unchanged: the pod's labels become series labels (ztunnel's
`app: ztunnel` becomes `app="ztunnel"`), plus `namespace`, `pod` and `node`.

Pure: the config is data, written to the process's config file by the kernel.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from netlab import mesh
from netlab.model import Lab
from netlab.plan import naming
from netlab.plan.modes.base import PlanContext
from netlab.plan.state import DesiredState, ProcessSpec, ReadyCheck, RouteSpec, ScrapeTarget

NAME = "prometheus"  # the process name, and the `port-forward` target
BINARY = "/usr/bin/prometheus"  # Debian's package `prometheus`
JOB = "kubernetes-pods"  # the job name of Istio's sample config, kept so queries look the same

_META = "__meta_kubernetes_"

# The `kubernetes-pods` job's relabel_configs from Istio's samples/addons/prometheus.yaml,
# verbatim (the IPv6 address rule is left out: lab pods are IPv4).
RELABEL_CONFIGS: list[dict[str, Any]] = [
    {"action": "keep", "regex": "true", "source_labels": [f"{_META}pod_annotation_prometheus_io_scrape"]},
    {"action": "drop", "regex": "true", "source_labels": [f"{_META}pod_annotation_prometheus_io_scrape_slow"]},
    {"action": "replace", "regex": "(https?)", "source_labels": [f"{_META}pod_annotation_prometheus_io_scheme"],
     "target_label": "__scheme__"},
    {"action": "replace", "regex": "(.+)", "source_labels": [f"{_META}pod_annotation_prometheus_io_path"],
     "target_label": "__metrics_path__"},
    {"action": "replace", "regex": r"(\d+);((([0-9]+?)(\.|$)){4})", "replacement": "$2:$1",
     "source_labels": [f"{_META}pod_annotation_prometheus_io_port", f"{_META}pod_ip"],
     "target_label": "__address__"},
    {"action": "labelmap", "regex": f"{_META}pod_annotation_prometheus_io_param_(.+)",
     "replacement": "__param_$1"},
    {"action": "labelmap", "regex": f"{_META}pod_label_(.+)"},
    {"action": "replace", "source_labels": [f"{_META}namespace"], "target_label": "namespace"},
    {"action": "replace", "source_labels": [f"{_META}pod_name"], "target_label": "pod"},
    {"action": "drop", "regex": "Pending|Succeeded|Failed|Completed", "source_labels": [f"{_META}pod_phase"]},
    {"action": "replace", "source_labels": [f"{_META}pod_node_name"], "target_label": "node"},
]


def sanitize(name: str) -> str:
    """A Kubernetes label name as Prometheus' discovery spells it in a meta label."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def meta_labels(target: ScrapeTarget) -> dict[str, str]:
    """What Prometheus' Kubernetes pod discovery would set for this pod: its labels, its
    scrape annotations (the way Istio annotates proxies: scrape, port, path), address,
    names and phase."""
    ip, port = target.address.rsplit(":", 1)
    out = {
        f"{_META}namespace": target.namespace,
        f"{_META}pod_name": target.pod,
        f"{_META}pod_ip": ip,
        f"{_META}pod_node_name": target.node,
        f"{_META}pod_phase": "Running",
        f"{_META}pod_annotation_prometheus_io_scrape": "true",
        f"{_META}pod_annotation_prometheus_io_port": port,
        f"{_META}pod_annotation_prometheus_io_path": target.path,
    }
    for key, value in target.labels:
        out[f"{_META}pod_label_{sanitize(key)}"] = value
        out[f"{_META}pod_labelpresent_{sanitize(key)}"] = "true"
    return out


def targets(state: DesiredState) -> list[ScrapeTarget]:
    """Every metrics endpoint the plan's processes declared, in plan order."""
    return [p.scrape for p in state.processes if p.scrape is not None]


def config(state: DesiredState, scrape_interval: str) -> dict[str, Any]:
    """prometheus.yml as data (JSON is YAML, so the kernel writes it as it is)."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                   "scrape_timeout": scrape_interval},
        "scrape_configs": [{
            "job_name": JOB,
            "honor_labels": True,
            "static_configs": [{"targets": [t.address], "labels": meta_labels(t)} for t in targets(state)],
            "relabel_configs": RELABEL_CONFIGS,
        }],
    }


def storage_dir(lab: str) -> str:
    return f"{naming.state_dir(lab)}/{NAME}"


def plan(ctx: PlanContext) -> None:
    """Routes from the fabric to the pod ranges, and the Prometheus process."""
    state, lab = ctx.state, ctx.lab
    fabric = naming.fabric_netns(lab.name)
    have = {(r.netns, r.dst) for r in state.routes}  # a waypoint or sidecar mode may route them already
    for node in state.nodes:
        if (fabric, node.pod_cidr) not in have:
            state.routes.append(RouteSpec(fabric, node.pod_cidr, via=node.ip, dev=naming.FABRIC_BRIDGE))
    if not ctx.options.start_processes:
        return
    listen = f"0.0.0.0:{mesh.PROMETHEUS_PORT}"
    state.processes.append(ProcessSpec(
        name=NAME, netns=fabric,
        argv=(ctx.options.python, "-m", "netlab.telemetry.prometheus_process", "--binary", BINARY,
              "--config", "{config}", "--storage", storage_dir(lab.name), "--listen", listen,
              *(() if lab.prometheus.wait_for_targets else ("--no-wait-for-targets",))),
        # The launcher says ready once Prometheus answers /-/ready; the listener check
        # stays as a second, kernel-side witness.
        signals_ready=True, ready=(ReadyCheck(fabric, mesh.PROMETHEUS_PORT),),
        config=json.dumps(config(state, lab.prometheus.scrape_interval), indent=1)))


def enable(lab: Lab) -> Lab:
    """`lab` with its Prometheus on (`netlab up --prometheus`), keeping its scrape interval."""
    return dataclasses.replace(lab, prometheus=dataclasses.replace(lab.prometheus, enabled=True))
