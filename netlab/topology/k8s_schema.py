"""Kubernetes kinds checked against Kubernetes' own OpenAPI schemas (kubernetes-validate).

netlab's parsers (deployment.py, service.py, objects.py) read the fields that shape the
dataplane and give tailored errors for them. This second pass applies the schema the
API server itself publishes to the whole document, so a field netlab accepts and ignores
(`resources`, `strategy`, probes) still cannot hold a shape Kubernetes would refuse.

kubernetes-validate ships the schemas as JSON files inside the package; they are read
from there (never fetched), once per kind. Its own `validate()` re-reads the 1.8 MB
definitions file on every call, so the files are opened here directly and cached.
The "strict" variant closes every object, as `kubectl apply --validate=strict` does.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

from netlab.topology.documents import Document
from netlab.topology.kube_jsonschema import kube_validator
from netlab.topology.schema_errors import first_error, schema_error

KUBERNETES_VERSION = "1.33"
"""The Kubernetes API whose schemas apply: the newest bundled one not newer than this."""

# kind → apiVersion netlab accepts; each has a schema file in kubernetes-validate.
KINDS = {"Namespace": "v1", "ServiceAccount": "v1", "Deployment": "apps/v1", "Service": "v1",
         "StatefulSet": "apps/v1", "Pod": "v1", "ConfigMap": "v1", "Secret": "v1"}

_VERSION_DIR = re.compile(r"^v(\d+)\.(\d+)\.\d+-local-strict$")


def validate(doc: Document) -> None:
    """Raise the TopologyError for the first place `doc` breaks Kubernetes' schema for its kind."""
    kind, api_version = doc.data["kind"], doc.data["apiVersion"]
    version, validator = _validator(kind, api_version)
    instance = {k: _without_nulls(v) for k, v in doc.data.items() if k != "status"}
    error = first_error(validator, instance)
    if error is not None:
        raise schema_error(doc, error, schema_name=f"Kubernetes {version}'s OpenAPI schema for {kind}")


def _without_nulls(value: Any) -> Any:
    """An empty field means "not given" to the API server's JSON decoder; the schemas say so
    unevenly (IntOrString is a oneOf two nullable types, so null would match both)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def schema_version() -> str:
    """The Kubernetes version whose schemas are applied (for messages and docs)."""
    return _schema_dir()[0]


@functools.cache
def _schema_dir() -> tuple[str, Any]:
    root = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    wanted = tuple(int(p) for p in KUBERNETES_VERSION.split("."))
    found: list[tuple[tuple[int, int], Any]] = []
    for entry in root.iterdir():
        m = _VERSION_DIR.match(entry.name)
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), entry))
    usable = [f for f in found if f[0] <= wanted] or found
    if not usable:
        raise RuntimeError("kubernetes-validate ships no strict schemas; reinstall it")
    (major, minor), entry = max(usable, key=lambda f: f[0])
    return f"{major}.{minor}", entry


@functools.cache
def _registry() -> Registry:
    _, folder = _schema_dir()
    definitions = json.loads((folder / "_definitions.json").read_text(encoding="utf-8"))
    return Resource.from_contents(definitions) @ Registry()


@functools.cache
def _validator(kind: str, api_version: str) -> tuple[str, jsonschema.protocols.Validator]:
    version, folder = _schema_dir()
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # apps/v1 → apps-v1
    schema = json.loads((folder / f"{kind.lower()}-{group_version}.json").read_text(encoding="utf-8"))
    registry = Resource.from_contents(schema) @ _registry()
    return version, kube_validator(schema, registry)
