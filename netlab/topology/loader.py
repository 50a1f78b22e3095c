"""load(): files → one validated model.Lab, or exactly one TopologyError.

Two passes: every document is parsed on its own (shape, types, unknown fields), then
references.py checks what needs the whole lab. Loading builds nothing, so an error
never leaves anything half-made.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from netlab.errors import TopologyError
from netlab.model import Lab
from netlab.topology.k8s_schema import KINDS as KUBERNETES_KINDS
from netlab.topology.k8s_schema import validate as validate_kubernetes
from netlab.topology.deployment import parse_deployment, parse_pod, parse_statefulset
from netlab.topology.documents import Document, read_file
from netlab.topology.safe_yaml import Budget
from netlab.topology.fields import suggest, type_name
from netlab.topology.header import LAB_API_VERSION, check_name_override, parse_lab
from netlab.topology.objects import parse_config_object, parse_kept, parse_namespace, parse_service_account
from netlab.topology.references import Collected, Parsed, build_lab
from netlab.topology.service import parse_service

ISTIO_SECURITY = ("security.istio.io/v1", "security.istio.io/v1beta1")
GATEWAY_API = ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1")

# kind → (accepted apiVersions, parser). Lab is handled apart: it is the header.
KINDS: dict[str, tuple[tuple[str, ...], Callable[[Document], Parsed] | None]] = {
    "Lab": ((LAB_API_VERSION,), None),
    "Namespace": (("v1",), parse_namespace),
    "ServiceAccount": (("v1",), parse_service_account),
    "Deployment": (("apps/v1",), parse_deployment),
    "StatefulSet": (("apps/v1",), parse_statefulset),
    "Pod": (("v1",), parse_pod),
    "ConfigMap": (("v1",), parse_config_object),
    "Secret": (("v1",), parse_config_object),
    "Service": (("v1",), parse_service),
    "PeerAuthentication": (ISTIO_SECURITY, parse_kept),
    "AuthorizationPolicy": (ISTIO_SECURITY, parse_kept),
    "HTTPRoute": (GATEWAY_API, parse_kept),
    "Gateway": (GATEWAY_API, parse_kept),
}

SUPPORTED_KINDS = tuple(KINDS)


def load(paths: Sequence[str | os.PathLike[str]], name_override: str | None = None) -> Lab:
    """Parse and validate topology files into a Lab; raise one TopologyError on the first problem.

    Documents may be spread over the files in any order; exactly one must be the Lab.
    `name_override` replaces the Lab's metadata.name (e.g. to run two copies side by side).
    """
    files = [os.fspath(p) for p in paths]
    if not files:
        raise TopologyError("(no files)", None, "", "no topology files were given",
                            "name at least one YAML file, e.g. topologies/bookinfo.yaml")
    if name_override is not None:
        check_name_override(name_override)
    collected = Collected()
    budget = Budget()
    for file in files:
        for doc in read_file(file, budget):
            kind = _kind(doc)
            if kind == "Lab":
                if collected.header is not None:
                    first = collected.header.doc
                    raise doc.error("kind", f"a second Lab document (the first is {first.file}, "
                                    f"document {first.number})",
                                    "keep exactly one Lab document across all the files")
                collected.header = parse_lab(doc)
            else:
                parser = KINDS[kind][1]
                assert parser is not None
                parsed = parser(doc)
                if kind in KUBERNETES_KINDS:  # netlab's own reading first: its errors are tailored
                    validate_kubernetes(doc)
                collected.objects.append((parsed, doc))
    return build_lab(collected, files, name_override)


def _kind(doc: Document) -> str:
    """The document's kind, after checking it is supported under the apiVersion given."""
    data: Any = doc.data
    if not isinstance(data, dict):
        raise doc.error("", f"a document must be a mapping (a Kubernetes object), got {type_name(data)}",
                        "start the document with apiVersion:, kind: and metadata: lines")
    supported = ", ".join(SUPPORTED_KINDS)
    kind = data.get("kind")
    if kind is None:
        raise doc.error("kind", "missing kind", f"add kind: with one of: {supported}")
    if not isinstance(kind, str) or kind not in KINDS:
        raise doc.error("kind", f"unsupported kind {kind!r}{suggest(str(kind), SUPPORTED_KINDS)}",
                        f"use one of the supported kinds: {supported}")
    versions = KINDS[kind][0]
    api = data.get("apiVersion")
    if api is None:
        raise doc.error("apiVersion", "missing apiVersion", f"add apiVersion: {versions[0]}")
    if api not in versions:
        raise doc.error("apiVersion", f"apiVersion {api!r} is not supported for {kind}",
                        f"use apiVersion: {' or '.join(versions)}")
    return kind
