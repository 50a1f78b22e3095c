"""The Lab document: validated against the published JSON Schema, then a few semantic checks.

The schema in netlab/schema/lab.schema.json is the single description of the Lab
document: editors complete from it and the loader validates with it, so the two cannot
drift apart. Checks a schema cannot express well (unique node names, real CIDRs that do
not overlap) follow in code.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from netlab.errors import TopologyError
from netlab.model import IstioVersion, Node
from netlab.topology.documents import Document, index, join, last_key
from netlab.topology.fields import type_name

LAB_API_VERSION = "netlab.dev/v1alpha1"
LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
HOSTNAME_LABEL = "kubernetes.io/hostname"
_JSON_TYPES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false"}


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
    trust_domain: str
    pod_cidr: str
    service_cidr: str
    nodes: list[Node]
    doc: Document


def parse_lab(doc: Document) -> LabHeader:
    data = doc.data
    error = best_match(_validator().iter_errors(data))
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
    return net


def _schema_error(doc: Document, error: ValidationError) -> TopologyError:
    """Turn one jsonschema error into a TopologyError that names the field and a fix.

    The fix text comes from the schema's own descriptions and examples, so improving
    the schema improves both editor completion and the loader's messages.
    """
    path = ""
    for part in error.absolute_path:
        path = index(path, part) if isinstance(part, int) else join(path, part)
    schema, instance, kind = error.schema, error.instance, error.validator
    field = last_key(path) if path else "the document"
    if kind == "required":
        missing = next((r for r in error.validator_value if r not in instance), "?")
        sub = schema.get("properties", {}).get(missing, {})
        return doc.error(join(path, missing), f"missing required field {missing}",
                         f"add {missing}{_example(missing, sub, ', e.g. ')}{_about(sub)}")
    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extra = next((k for k in instance if k not in allowed), "?")
        close = difflib.get_close_matches(str(extra), allowed, n=1, cutoff=0.6)
        fix = f'did you mean "{close[0]}"?' if close else "remove it"
        return doc.error(join(path, extra), f'unknown field "{extra}"', f"{fix} (fields here: {', '.join(allowed)})")
    if kind == "type":
        wanted = error.validator_value if isinstance(error.validator_value, str) else error.validator_value[0]
        expected = _JSON_TYPES.get(wanted, wanted)
        if wanted == "string" and isinstance(instance, (int, float, bool)):
            fix = f'quote the value so YAML reads it as text: {field}: "{instance}"'
        else:
            fix = f"give {field} {expected}{_example(field, schema, ', e.g. ')}{_about(schema)}"
        return doc.error(path, f"expected {expected}, got {type_name(instance)}", fix)
    if kind in ("enum", "const"):
        choices = error.validator_value if kind == "enum" else [error.validator_value]
        return doc.error(path, f"{json.dumps(instance)} is not allowed here",
                         f"use {' or '.join(json.dumps(c) for c in choices)}{_about(schema)}")
    if kind == "minItems":
        return doc.error(path, f"{field} needs at least {error.validator_value} item(s)",
                         f"add items{_example(field, schema, ', e.g. ')}{_about(schema)}")
    if kind == "pattern":
        return doc.error(path, f"{instance!r} is not a valid {field}",
                         f"use a value that fits{_about(schema)}{_example(field, schema, '; e.g. ')}")
    return doc.error(path, error.message, f"see the field's description in {schema_path().name}{_about(schema)}")


def _about(schema: dict[str, Any]) -> str:
    description = schema.get("description", "")
    return f" ({description.rstrip('.')})" if description else ""


def _example(field: str, schema: dict[str, Any], lead: str) -> str:
    examples = schema.get("examples")
    return f"{lead}{field}: {json.dumps(examples[0])}" if examples else ""
