"""`netlab export --to kind`: output validated offline, and read back by netlab as the
same lab (the plans are equal), for every example topology."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from netlab import topology
from netlab.errors import NetlabError, TopologyError
from netlab.plan.options import PlanOptions
from netlab.plan.planner import plan
from netlab.topology import crd, k8s_schema
from netlab.topology.documents import Document
from netlab.topology.export import export, validate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "topologies").glob("*.yaml"))
OPTIONS = PlanOptions(python="/usr/bin/python3")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_exported_manifests_plus_the_lab_document_plan_the_same_lab(path: Path, tmp_path: Path) -> None:
    export([str(path)], "kind", str(tmp_path))
    original = plan(topology.load([path]), OPTIONS)
    # The Lab document as it was in the original file (export copies it to lab.yaml).
    again = plan(topology.load([tmp_path / "manifests.yaml", tmp_path / "lab.yaml"]), OPTIONS)
    assert again == original


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_the_output_has_no_lab_document_and_only_public_images(path: Path, tmp_path: Path) -> None:
    export([str(path)], "kind", str(tmp_path))
    docs = [d for d in yaml.safe_load_all((tmp_path / "manifests.yaml").read_text()) if d]
    assert docs and not [d for d in docs if d["kind"] == "Lab"]
    images = [c["image"] for d in docs if d["kind"] == "Deployment"
              for c in d["spec"]["template"]["spec"]["containers"]]
    assert images and not [i for i in images if i.startswith("netlab/")]
    assert not [d for d in docs if d["kind"] == "Deployment" and "nodeName" in d["spec"]["template"]["spec"]]
    # Checked again here with the validators themselves, document by document.
    for i, d in enumerate(docs, 1):
        doc = Document("manifests.yaml", i, d)
        if d["kind"] in k8s_schema.KINDS:
            k8s_schema.validate(doc)
        else:
            crd.validate_spec(doc, d["kind"], d["apiVersion"])
    kind = yaml.safe_load((tmp_path / "kind-cluster.yaml").read_text())
    lab = topology.load([path])
    assert [n["role"] for n in kind["nodes"]] == ["control-plane"] + ["worker"] * len(lab.nodes)
    assert [n["labels"]["netlab.dev/node"] for n in kind["nodes"][1:]] == [n.name for n in lab.nodes]
    readme = (tmp_path / "README.md").read_text()
    assert "istioctl install --set profile=" in readme and "kubectl apply -f manifests.yaml" in readme


def test_the_validation_refuses_what_a_cluster_would_refuse() -> None:
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}}}
    with pytest.raises(TopologyError, match="replicas"):
        validate([bad])
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "p", "namespace": "n"}, "spec": {"acton": "DENY"}}
    with pytest.raises(TopologyError, match="acton"):
        validate([policy])


def test_only_kind_is_a_target(tmp_path: Path) -> None:
    with pytest.raises(NetlabError, match="kind"):
        export([str(EXAMPLES[0])], "minikube", str(tmp_path))
