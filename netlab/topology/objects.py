"""Metadata and the simple kinds: Namespace, ServiceAccount, and the kept policy kinds.

Kept kinds (PeerAuthentication, AuthorizationPolicy, HTTPRoute, Gateway) have their
envelope checked here and their spec checked by the kind's own vendored CRD schema, so
this parser never has to chase the Istio and Gateway API field lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from netlab.model import Namespace, Resource, ServiceAccount
import netlab.topology.ignored as ignored
from netlab.topology.crd import validate_spec
from netlab.topology.documents import Document
from netlab.topology.fields import (NAME, NAME_HELP, SUBDOMAIN, SUBDOMAIN_HELP, check_fields, mapping,
                                    string, string_map)

DEFAULT_NAMESPACE = "default"


@dataclass
class Meta:
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]


def envelope(doc: Document, extra: tuple[str, ...] = ("spec",)) -> dict[str, Any]:
    """The top-level mapping, checked for unknown fields."""
    top = doc.data
    check_fields(doc, top, "", ("apiVersion", "kind", "metadata") + extra, ignored.TOP_LEVEL)
    return top


def metadata(doc: Document, *, namespaced: bool, name_pattern: re.Pattern[str] = NAME,
             name_help: str = NAME_HELP) -> Meta:
    meta = mapping(doc, doc.data.get("metadata"), "metadata")
    known = ("name", "namespace", "labels", "annotations") if namespaced else ("name", "labels", "annotations")
    unsupported = None if namespaced else {
        "namespace": f"remove it; a {doc.data.get('kind')} is not inside a namespace"}
    check_fields(doc, meta, "metadata", known, ignored.METADATA, unsupported)
    name = string(doc, meta, "metadata", "name", pattern=name_pattern, pattern_help=name_help,
                  required_example="name: my-app")
    namespace = DEFAULT_NAMESPACE
    if namespaced:
        namespace = string(doc, meta, "metadata", "namespace", default=DEFAULT_NAMESPACE,
                           pattern=NAME, pattern_help=NAME_HELP)
    return Meta(name=name, namespace=namespace,  # type: ignore[arg-type]
                labels=string_map(doc, meta, "metadata", "labels"),
                annotations=string_map(doc, meta, "metadata", "annotations"))


def parse_namespace(doc: Document) -> Namespace:
    check_fields(doc, doc.data, "", ("apiVersion", "kind", "metadata"),
                 ignored.TOP_LEVEL + ignored.NAMESPACE)
    meta = metadata(doc, namespaced=False)
    return Namespace(name=meta.name, labels=meta.labels, source=doc.source())


def parse_service_account(doc: Document) -> ServiceAccount:
    check_fields(doc, doc.data, "", ("apiVersion", "kind", "metadata"),
                 ignored.TOP_LEVEL + ignored.SERVICE_ACCOUNT)
    meta = metadata(doc, namespaced=True, name_pattern=SUBDOMAIN, name_help=SUBDOMAIN_HELP)
    return ServiceAccount(namespace=meta.namespace, name=meta.name, source=doc.source())


@dataclass
class Ignored:
    """A kind netlab accepts and does not use (ConfigMap, Secret): it only yields a note."""

    kind: str
    namespace: str
    name: str

    @property
    def note(self) -> str:
        return (f"{self.kind} {self.namespace}/{self.name} is accepted and ignored: netlab does not "
                "serve ConfigMaps or Secrets to pods")


def parse_config_object(doc: Document) -> Ignored:
    """ConfigMap or Secret: checked (metadata, fields, Kubernetes' schema), then only noted."""
    check_fields(doc, doc.data, "", ("apiVersion", "kind", "metadata"),
                 ignored.TOP_LEVEL + ignored.CONFIG_OBJECT)
    meta = metadata(doc, namespaced=True, name_pattern=SUBDOMAIN, name_help=SUBDOMAIN_HELP)
    return Ignored(doc.data["kind"], meta.namespace, meta.name)


def parse_kept(doc: Document) -> Resource:
    """Envelope and metadata here; the spec by the kind's own CRD schema (crd.py).

    The spec kept is the validated one with non-nullable nulls pruned, as the API server
    stores it, so the layers that implement the kind never meet a shape its CRD refuses.
    """
    envelope(doc)
    meta = metadata(doc, namespaced=True, name_pattern=SUBDOMAIN, name_help=SUBDOMAIN_HELP)
    mapping(doc, doc.data.get("spec"), "spec")
    spec = validate_spec(doc, doc.data["kind"], doc.data["apiVersion"])
    return Resource(kind=doc.data["kind"], namespace=meta.namespace, name=meta.name, spec=spec,
                    labels=meta.labels, source=doc.source(), annotations=meta.annotations)
