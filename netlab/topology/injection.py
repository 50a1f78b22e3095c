"""Checks on what sidecar injection and the install profile read from a topology.

Why here, not in the planner: a wrong annotation value (a port list with a typo, an
interception mode Istio does not have) is a user mistake, and the topology layer is
where mistakes get one located error with a fix. The planner then trusts the values.
"""

from __future__ import annotations

import ipaddress

from netlab import mesh
from netlab.model import Deployment, Namespace
from netlab.topology.documents import Document, join
from netlab.topology.header import LabHeader

POD_ANNOTATIONS = "spec.template.metadata.annotations"
POD_LABELS = "spec.template.metadata.labels"
INTERCEPTION_MODES = ("REDIRECT", "TPROXY")
PORT_LISTS = (mesh.EXCLUDE_INBOUND_PORTS_ANNOTATION, mesh.EXCLUDE_OUTBOUND_PORTS_ANNOTATION)
RANGE_LISTS = (mesh.INCLUDE_OUTBOUND_RANGES_ANNOTATION, mesh.EXCLUDE_OUTBOUND_RANGES_ANNOTATION)


def check_namespace(ns: Namespace, doc: Document, header: LabHeader) -> None:
    if header.istio_profile != "ambient" and ns.labels.get(mesh.DATAPLANE_MODE_LABEL) == "ambient":
        raise doc.error(join("metadata.labels", mesh.DATAPLANE_MODE_LABEL),
                        "this namespace asks for ambient, but the Lab installs Istio with the "
                        "default profile, which runs no ztunnel",
                        "set spec.istio.profile: ambient in the Lab document, or remove the label")


def check_deployment(dep: Deployment, doc: Document, header: LabHeader) -> None:
    if header.istio_profile != "ambient" and dep.labels.get(mesh.DATAPLANE_MODE_LABEL) == "ambient":
        raise doc.error(join(POD_LABELS, mesh.DATAPLANE_MODE_LABEL),
                        "this pod asks for ambient, but the Lab installs Istio with the default "
                        "profile, which runs no ztunnel",
                        "set spec.istio.profile: ambient in the Lab document, or remove the label")
    inject = dep.labels.get(mesh.SIDECAR_INJECT)
    if inject is not None and inject not in ("true", "false"):
        raise doc.error(join(POD_LABELS, mesh.SIDECAR_INJECT),
                        f"{mesh.SIDECAR_INJECT} is {inject!r}", 'use "true" or "false" (quoted)')
    ann = dep.annotations
    mode = ann.get(mesh.INTERCEPTION_MODE_ANNOTATION)
    if mode is not None and mode not in INTERCEPTION_MODES:
        raise doc.error(join(POD_ANNOTATIONS, mesh.INTERCEPTION_MODE_ANNOTATION),
                        f"interception mode {mode!r} is not one netlab emulates",
                        "use REDIRECT (the default) or TPROXY")
    for key in PORT_LISTS:
        value = ann.get(key)
        if value is not None and value.strip() and port_list(value) is None:
            raise doc.error(join(POD_ANNOTATIONS, key), f"{value!r} is not a list of ports",
                            'write ports 1-65535 separated by commas, e.g. "8080,9090"')
    for key in RANGE_LISTS:
        value = ann.get(key)
        if value is None or not value.strip():
            continue
        if value.strip() == "*" and key == mesh.INCLUDE_OUTBOUND_RANGES_ANNOTATION:
            continue
        if cidr_list(value) is None:
            raise doc.error(join(POD_ANNOTATIONS, key), f"{value!r} is not a list of IPv4 CIDRs",
                            'write ranges separated by commas, e.g. "10.96.0.0/16,10.244.0.0/16"'
                            + (', or "*" for all' if key == mesh.INCLUDE_OUTBOUND_RANGES_ANNOTATION else ""))


def port_list(value: str) -> list[str] | None:
    """The ports of a comma-separated annotation, None if one is not a port."""
    items = [p.strip() for p in value.split(",") if p.strip()]
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in items):
        return None
    return [str(int(p)) for p in items]


def cidr_list(value: str) -> list[str] | None:
    out = []
    for item in (p.strip() for p in value.split(",") if p.strip()):
        try:
            out.append(str(ipaddress.IPv4Network(item, strict=False)))
        except ValueError:
            return None
    return out
