"""The install profile field and the injection annotations: read, or refused with a located error."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.errors import TopologyError
from netlab.topology import load

LAB = """apiVersion: netlab.dev/v1alpha1
kind: Lab
metadata: {name: t}
spec:
  istio: {PROFILE}
  nodes: [{name: node-1}]
"""


def pod(labels: str = "{app: web}", annotations: str = "{}", ns: str = "default") -> str:
    return (f"---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\n"
            f"spec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n"
            f"    metadata: {{labels: {labels}, annotations: {annotations}}}\n    spec:\n"
            "      containers:\n        - {name: web, image: netlab/http-echo}\n")


def _load(tmp_path: Path, text: str):
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return load([str(path)])


def _refused(tmp_path: Path, text: str) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        _load(tmp_path, text)
    return info.value


def test_profile_defaults_to_ambient(tmp_path: Path) -> None:
    assert _load(tmp_path, LAB.replace("{PROFILE}", "{}") + pod()).istio_profile == "ambient"
    assert _load(tmp_path, LAB.replace("{PROFILE}", "{profile: default}") + pod()).istio_profile == "default"


def test_unknown_profile_is_refused(tmp_path: Path) -> None:
    e = _refused(tmp_path, LAB.replace("{PROFILE}", "{profile: demo}") + pod())
    assert e.path == "spec.istio.profile"


def test_ambient_pod_needs_the_ambient_profile(tmp_path: Path) -> None:
    e = _refused(tmp_path, LAB.replace("{PROFILE}", "{profile: default}")
                 + pod(labels="{app: web, istio.io/dataplane-mode: ambient}"))
    assert "istio.io/dataplane-mode" in e.path and "profile" in e.fix


def test_ambient_namespace_needs_the_ambient_profile(tmp_path: Path) -> None:
    ns = ("---\napiVersion: v1\nkind: Namespace\n"
          "metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}\n")
    e = _refused(tmp_path, LAB.replace("{PROFILE}", "{profile: default}") + ns + pod(ns="apps"))
    assert e.path.startswith("metadata.labels")


@pytest.mark.parametrize("key,value", [
    ("sidecar.istio.io/interceptionMode", "NONE"),
    ("traffic.sidecar.istio.io/excludeInboundPorts", "80,http"),
    ("traffic.sidecar.istio.io/excludeOutboundPorts", "70000"),
    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "10.0.0.0/33"),
    ("traffic.sidecar.istio.io/includeOutboundIPRanges", "everything"),
])
def test_bad_injection_annotations_are_refused(tmp_path: Path, key: str, value: str) -> None:
    e = _refused(tmp_path, LAB.replace("{PROFILE}", "{}") + pod(annotations=f'{{"{key}": "{value}"}}'))
    assert key in e.path and value in e.problem


def test_good_injection_annotations_load(tmp_path: Path) -> None:
    ann = ('{"sidecar.istio.io/interceptionMode": TPROXY, '
           '"traffic.sidecar.istio.io/excludeInboundPorts": "8080, 9090", '
           '"traffic.sidecar.istio.io/includeOutboundIPRanges": "*"}')
    lab = _load(tmp_path, LAB.replace("{PROFILE}", "{}") + pod(annotations=ann))
    assert lab.deployments[0].annotations["sidecar.istio.io/interceptionMode"] == "TPROXY"


def test_inject_label_value_is_checked(tmp_path: Path) -> None:
    e = _refused(tmp_path, LAB.replace("{PROFILE}", "{}")
                 + pod(labels='{app: web, sidecar.istio.io/inject: "yes"}'))
    assert "sidecar.istio.io/inject" in e.path
