"""The lab-side glue of the Kiali view and the topology picture, on a recorded summary."""

from __future__ import annotations

import html
import shutil
from types import SimpleNamespace
from typing import Any

import pytest

from netlab.telemetry import lab_graph, topology_view

WAYPOINT_LABELS = {"gateway.istio.io/managed": "istio.io-mesh-controller",
                   "gateway.networking.k8s.io/gateway-name": "waypoint"}


def record() -> Any:
    pods = [
        {"namespace": "a", "name": "sleep-0", "deployment": "sleep", "node": "n1", "ip": "10.244.0.2",
         "labels": {"app": "sleep"}, "mode": "ambient"},
        {"namespace": "b", "name": "ratings-0", "deployment": "ratings", "node": "n2", "ip": "10.244.1.2",
         "labels": {"app": "ratings"}, "mode": "sidecar"},
        {"namespace": "b", "name": "waypoint-0", "deployment": "waypoint", "node": "n2", "ip": "10.244.1.3",
         "labels": WAYPOINT_LABELS, "mode": ""},
        {"namespace": "c", "name": "curl-0", "deployment": "curl", "node": "n1", "ip": "10.244.0.3",
         "labels": {}, "mode": ""},
    ]
    summary = {"lab": "demo", "nodes": [{"name": "n1", "ip": "172.18.0.2", "podCIDR": "10.244.0.0/24"},
                                        {"name": "n2", "ip": "172.18.0.3", "podCIDR": "10.244.1.0/24"}],
               "pods": pods,
               "services": [{"namespace": "b", "name": "ratings", "clusterIP": "10.96.0.11", "ports": [
                   {"port": 9080, "endpoints": [{"pod": "b/ratings-0", "ip": "10.244.1.2", "port": 9080}]}]}]}
    procs = [SimpleNamespace(name=n) for n in ("dns", "ztunnel/n1", "prometheus")]
    return SimpleNamespace(lab="demo", summary=summary, processes=procs)


def test_waypoints_are_found_by_kialis_pod_label() -> None:
    (wp,) = lab_graph.waypoints(record())
    assert (wp.namespace, wp.workload, wp.cluster) == ("b", "waypoint", "Kubernetes")
    assert lab_graph.namespaces(record()) == ["a", "b", "c"]


def test_topology_dot_shows_modes_ztunnels_services_and_prometheus() -> None:
    dot = topology_view.to_dot(record())
    assert '"ztunnel/n1"' in dot and '"ztunnel/n2"' not in dot  # only where one runs
    assert "(ambient)" in dot and "(sidecar)" in dot and "(waypoint)" in dot and "(no mesh)" in dot
    assert 'shape=diamond' in dot  # the waypoint
    assert '"svc/b/ratings" -> "pod/b/ratings-0"' in dot
    assert "prometheus" in dot and dot.count("fabric ->") == 3  # two nodes and Prometheus


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed")
def test_topology_renders_with_the_kiali_renderer() -> None:
    svg = topology_view.render(record(), "svg")
    assert svg.lstrip().startswith("<?xml") and "b/ratings-0" in html.unescape(svg)
    assert "<svg" in topology_view.render(record(), "html")
