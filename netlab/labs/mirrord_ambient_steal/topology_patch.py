"""Per-variant changes to the lab's base topology, applied to the parsed YAML documents.

The variants differ only in a few fields (Istio version, whether the namespace is in
ambient, a pod label), so one topology file plus a patch keeps them honest: whatever
is not patched is identical across variants.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

BASE = Path(__file__).with_name("topology.yaml")
AMBIENT_LABEL = "istio.io/dataplane-mode"


def patched(name: str, istio_version: str, ambient: bool,
            target_labels: dict[str, str] | None = None) -> str:
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(BASE.read_text()) if d]
    for d in docs:
        meta = d.setdefault("metadata", {})
        if d["kind"] == "Lab":
            meta["name"] = name
            d["spec"]["istio"]["version"] = istio_version
        elif d["kind"] == "Namespace" and meta["name"] == "shop" and not ambient:
            meta.get("labels", {}).pop(AMBIENT_LABEL, None)
        elif d["kind"] == "Deployment" and meta["name"] == "target" and target_labels:
            d["spec"]["template"]["metadata"]["labels"].update(target_labels)
    return yaml.safe_dump_all(docs, sort_keys=False)
