"""The Lab document: validated against the published JSON Schema, then a few semantic checks.

The schema in netlab/schema/lab.schema.json is the single description of the Lab
document: editors complete from it and the loader validates with it, so the two cannot
drift apart. Checks a schema cannot express well (unique node names, real CIDRs that do
not overlap) follow in code.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from netlab.errors import TopologyError
from netlab.model import FABRIC_CIDR, IstioInstallProfile, IstioVersion, Node
from netlab.model import PrometheusSpec
from netlab.topology.documents import Document, index, join
from netlab.topology.schema_errors import first_error, schema_error

LAB_API_VERSION = "netlab.dev/v1alpha1"
LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
HOSTNAME_LABEL = "kubernetes.io/hostname"


def schema_path() -> Path:
    """Where the Lab JSON Schema lives (installed with the package as package data)."""
    return Path(__file__).resolve().parent.parent / "schema" / "lab.schema.json"


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


@dataclass
class LabHeader:
    name: str
    istio_version: IstioVersion
    istio_profile: IstioInstallProfile
    trust_domain: str
    pod_cidr: str
    service_cidr: str
    nodes: list[Node]
    doc: Document

    @property
    def prometheus(self) -> PrometheusSpec:
        """`spec.prometheus`, already checked by the schema when the header was parsed."""
        raw = self.doc.data["spec"].get("prometheus") or {}
        return PrometheusSpec(enabled=bool(raw.get("enabled", False)),
                              scrape_interval=str(raw.get("scrapeInterval", "1s")),
                              wait_for_targets=bool(raw.get("waitForTargets", True)))


def parse_lab(doc: Document) -> LabHeader:
    data = doc.data
    error = first_error(_validator(), data)
    if error is not None:
        raise _schema_error(doc, error)
    spec = data["spec"]
    istio = spec.get("istio") or {}
    network = spec.get("network") or {}
    pod_cidr = _cidr(doc, network, "spec.network.podCIDR", "10.244.0.0/16")
    service_cidr = _cidr(doc, network, "spec.network.serviceCIDR", "10.96.0.0/16")
    if pod_cidr.overlaps(service_cidr):
        raise doc.error("spec.network.serviceCIDR", f"serviceCIDR {service_cidr} overlaps podCIDR {pod_cidr}",
                        "choose ranges that do not overlap, e.g. podCIDR 10.244.0.0/16 and serviceCIDR 10.96.0.0/16")
    nodes = _nodes(doc, spec["nodes"])
    node_slices = 2 ** (24 - pod_cidr.prefixlen)
    if node_slices < max(2, len(nodes)):
        raise doc.error("spec.network.podCIDR",
                        f"podCIDR {pod_cidr} is too small: each of the {len(nodes)} node(s) gets a /24 from it, "
                        "and at least two /24s are needed",
                        "use a larger range, e.g. podCIDR: 10.244.0.0/16")
    return LabHeader(name=data["metadata"]["name"], istio_version=istio.get("version", "1.24+"),
                     istio_profile=istio.get("profile", "ambient"),
                     trust_domain=istio.get("trustDomain", "cluster.local"), pod_cidr=str(pod_cidr),
                     service_cidr=str(service_cidr), nodes=nodes, doc=doc)


def check_name_override(name: str) -> None:
    if not LAB_NAME.match(name):
        raise TopologyError("--name", None, "metadata.name", f"{name!r} is not a valid lab name",
                            "use a lowercase letter, then up to 19 lowercase letters, digits or '-'")


def _nodes(doc: Document, items: list[dict[str, Any]]) -> list[Node]:
    nodes: list[Node] = []
    for i, item in enumerate(items):
        name = item["name"]
        if any(n.name == name for n in nodes):
            raise doc.error(join(index("spec.nodes", i), "name"), f"node {name!r} is declared twice",
                            "give each node its own name")
        labels = dict(item.get("labels") or {})
        labels.setdefault(HOSTNAME_LABEL, name)
        nodes.append(Node(name=name, labels=labels))
    return nodes


def _cidr(doc: Document, network: dict[str, str], path: str, default: str) -> ipaddress.IPv4Network:
    value = network.get(path.rsplit(".", 1)[-1], default)
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as e:
        fix = "write the network address with its prefix length, e.g. 10.244.0.0/16"
        if "host bits set" in str(e):
            fix = f"use the network address: {ipaddress.IPv4Network(value, strict=False)}"
        raise doc.error(path, f"{value!r} is not a valid IPv4 network ({e})", fix) from None
    if net.prefixlen > 24:
        raise doc.error(path, f"{net} is too small", "use a range of /24 or larger, e.g. 10.96.0.0/16")
    for special, what in SPECIAL_RANGES:
        if net.overlaps(special):
            raise doc.error(path, f"{net} overlaps {special}, {what}",
                            f"use a private range outside it, e.g. {default}")
    return net


# Ranges a pod or Service range must stay out of: an address there would be routed to
# the fabric, the host's loopback, the link-local pod gateway, or nowhere at all.
SPECIAL_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (FABRIC_CIDR, "netlab's own fabric network joining the nodes"),
    (ipaddress.IPv4Network("0.0.0.0/8"), "'this network' (0.0.0.0/8), which is never routed"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "the loopback range"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "the link-local range (pods reach their node through 169.254.1.1)"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "the multicast range"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "the reserved range 240.0.0.0/4 (and broadcast)"),
)


def _schema_error(doc: Document, error: ValidationError) -> TopologyError:
    """The fix text comes from the schema's own descriptions and examples, so improving
    the schema improves both editor completion and the loader's messages."""
    return schema_error(doc, error, schema_name=f"netlab/schema/{schema_path().name}", hints=True)
