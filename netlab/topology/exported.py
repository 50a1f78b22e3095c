"""The annotation that lets `netlab up` read exported manifests as the original files.

`netlab export --to kind` (netlab/topology/export.py) rewrites what a real cluster
cannot run as written: the built-in images become public ones (with their own
command lines), and `nodeName: node-1` becomes a nodeSelector on a node label, since
kind names its nodes itself. The original containers and nodeName go into one pod
template annotation, `netlab.dev/export`, which a cluster ignores. Reading it back
here, before the Deployment is parsed, makes the exported files plan exactly as the
originals did (a unit test compares the plans), and the annotation never reaches the
model, so nothing downstream sees it.
"""

from __future__ import annotations

import json
from typing import Any

from netlab.topology.documents import Document, join

ANNOTATION = "netlab.dev/export"
NODE_LABEL = "netlab.dev/node"  # the kind node label that stands for a Lab node's name
ANNOTATIONS_PATH = "spec.template.metadata.annotations"


def restore(doc: Document, pod: dict[str, Any], annotations: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(pod spec, annotations) as they were before the export; unchanged without the annotation."""
    raw = annotations.get(ANNOTATION)
    if raw is None:
        return pod, annotations
    where = join(ANNOTATIONS_PATH, ANNOTATION)
    try:
        saved = json.loads(raw)
    except json.JSONDecodeError as e:
        raise doc.error(where, f"the {ANNOTATION} annotation is not JSON ({e.msg})",
                        "remove the annotation (the file then runs the public images with a command:), "
                        "or export the original files again") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("containers"), list):
        raise doc.error(where, f"the {ANNOTATION} annotation has no list of containers",
                        "export the original files again with `netlab export`")
    pod = {**pod, "containers": saved["containers"]}
    node = saved.get("nodeName")
    if node is not None:
        selector = {k: v for k, v in (pod.get("nodeSelector") or {}).items() if k != NODE_LABEL}
        pod = {k: v for k, v in pod.items() if k != "nodeSelector"}
        pod["nodeName"] = node
        if selector:
            pod["nodeSelector"] = selector
    return pod, {k: v for k, v in annotations.items() if k != ANNOTATION}
