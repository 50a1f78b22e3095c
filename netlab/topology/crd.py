"""Istio and Gateway API documents checked as an API server checks them: with their CRDs.

The CRDs are vendored in netlab/schema/crds/ (see its README for source and licence).
A CRD's `openAPIV3Schema` is a *structural* schema, and the API server reads it with
Kubernetes' rules, not plain JSON Schema's. This module turns it into a JSON Schema
that means the same thing, so jsonschema can apply it:

- an object without `x-kubernetes-preserve-unknown-fields` is closed: unknown fields
  are refused, as `kubectl apply --validate=strict` refuses them (the API server would
  silently prune them, which is how a typo'd `mdoe:` left a namespace PERMISSIVE);
- `x-kubernetes-int-or-string` accepts an integer or a string;
- `x-kubernetes-list-type: set | map` refuses duplicate items or duplicate map keys;
- a null in a field that is not `nullable` is dropped before validation (the API
  server prunes those too), so `mtls:` with nothing after it means "not given".

Not applied: the `x-kubernetes-validations` CEL rules (no CEL evaluator here) and
`default`s. Logical branches (`oneOf`, `anyOf`, `not`) are left open, as Kubernetes
requires of them. Only `spec` is validated: `metadata` is checked by objects.py, and
`status` is dropped on create because the CRDs declare a status subresource.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from netlab.topology.documents import Document
from netlab.topology.kube_jsonschema import kube_validator
from netlab.topology.schema_errors import first_error, schema_error

CRD_DIR = Path(__file__).resolve().parent.parent / "schema" / "crds"

# kind → the vendored file holding its CRD. One place: loader.KINDS takes its apiVersions
# for these kinds from the served versions of these files.
CRD_FILES = {
    "AuthorizationPolicy": "security.istio.io.yaml",
    "PeerAuthentication": "security.istio.io.yaml",
    "Gateway": "gateway.networking.k8s.io_gateways.yaml",
    "HTTPRoute": "gateway.networking.k8s.io_httproutes.yaml",
}

_JUNCTORS = ("allOf", "anyOf", "oneOf")
_SKIPPED = ("description", "default", "example", "x-kubernetes-validations", "externalDocs")


@dataclass(frozen=True)
class CrdVersion:
    """One served version of one kind: its apiVersion and the JSON Schema of its spec."""

    kind: str
    api_version: str
    file: str
    spec_schema: dict[str, Any]  # structural, as vendored (for null pruning)
    spec_required: bool


def served_versions(kind: str) -> dict[str, CrdVersion]:
    """apiVersion → CrdVersion for every version of `kind` its CRD serves."""
    return _crds(CRD_FILES[kind]).get(kind, {})


@functools.cache
def _crds(file: str) -> dict[str, dict[str, CrdVersion]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # trusted data; libyaml only for speed
    with open(CRD_DIR / file, encoding="utf-8") as f:
        docs = [d for d in yaml.load_all(f, Loader=loader) if d]
    out: dict[str, dict[str, CrdVersion]] = {}
    for crd in docs:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", False):
                continue
            root = version["schema"]["openAPIV3Schema"]
            api_version = f"{group}/{version['name']}"
            out.setdefault(kind, {})[api_version] = CrdVersion(
                kind=kind, api_version=api_version, file=file,
                spec_schema=root.get("properties", {}).get("spec", {"type": "object"}),
                spec_required="spec" in root.get("required", ()))
    return out


@functools.cache
def _validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    version = served_versions(kind)[api_version]
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **to_json_schema(version.spec_schema)}
    return kube_validator(schema)


def validate_spec(doc: Document, kind: str, api_version: str) -> dict[str, Any]:
    """The document's spec, nulls pruned, after the CRD schema accepts it; else a TopologyError."""
    version = served_versions(kind)[api_version]
    data = doc.data
    if "spec" not in data and version.spec_required:
        raise doc.error("spec", f"missing required field spec: a {kind} needs one",
                        f"add spec: (see the {kind} CRD in netlab/schema/crds/{version.file})")
    spec = prune_nulls(data.get("spec"), version.spec_schema)
    if spec is None:
        spec = {}
    error = first_error(_validator(kind, api_version), spec)
    if error is not None:
        raise schema_error(doc, error, prefix="spec",
                           schema_name=f"the {kind} CRD ({api_version}, netlab/schema/crds/{version.file})")
    return spec


def to_json_schema(s: dict[str, Any], *, closed: bool = True) -> dict[str, Any]:
    """A structural schema as the JSON Schema that means what the API server means by it.

    `closed=False` inside oneOf/anyOf/allOf/not: those only constrain values there and
    must not make the object refuse the fields its main schema declares.
    """
    out: dict[str, Any] = {}
    for key, value in s.items():
        if key in _SKIPPED:
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub, closed=closed) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value, closed=closed)
        elif key in _JUNCTORS:
            out[key] = [to_json_schema(sub, closed=False) for sub in value]
        elif key == "not":
            out[key] = to_json_schema(value, closed=False)
        elif key == "nullable":
            continue
        else:
            out[key] = value
    if s.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (closed and s.get("type") == "object" and "additionalProperties" not in s
            and not s.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def prune_nulls(value: Any, schema: dict[str, Any]) -> Any:
    """Drop nulls from fields that are not nullable, as the API server does before validating.

    Unknown fields keep their nulls, so strict validation still names them.
    """
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for k, v in value.items():
            sub = props.get(k, extra if isinstance(extra, dict) else None)
            if v is None and sub is not None and not sub.get("nullable"):
                continue
            out[k] = prune_nulls(v, sub) if sub is not None else v
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune_nulls(v, schema["items"]) for v in value]
    return value
