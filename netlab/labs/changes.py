"""Changes to a lab's model that variants are made of, as small composable functions.

A variant says what differs from the lab's topology in terms of the model (an Istio
version, a label, one more policy), never by rewriting YAML: everything it does not
change is the same object in every variant. Each change returns a new model and leaves
its input alone (`dataclasses.replace`, new lists), because the runner hands one parsed
base model to every variant.

    Variant(..., change=chain(istio("1.23"), label_pods("shop", "target",
                                                     {"istio.io/dataplane-mode": "none"})))
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable

from netlab import model
from netlab.labs.framework import Change


def chain(*changes: Change) -> Change:
    """Apply `changes` left to right."""
    def apply(lab: model.Lab) -> model.Lab:
        for change in changes:
            lab = change(lab)
        return lab
    return apply


def istio(version: model.IstioVersion) -> Change:
    """Run the lab on another Istio version (1.23: TPROXY; 1.24+: REDIRECT)."""
    return lambda lab: replace(lab, istio_version=version)


def _labels(current: dict[str, str], set_: dict[str, str | None]) -> dict[str, str]:
    out = dict(current)
    for k, v in set_.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def label_namespace(name: str, labels: dict[str, str | None]) -> Change:
    """Set (or, with None, remove) labels on a namespace; it must exist."""
    def apply(lab: model.Lab) -> model.Lab:
        _require([n.name for n in lab.namespaces], name, "namespace")
        return replace(lab, namespaces=[
            replace(n, labels=_labels(n.labels, labels)) if n.name == name else n
            for n in lab.namespaces])
    return apply


def label_pods(namespace: str, deployment: str, labels: dict[str, str | None]) -> Change:
    """Set (or remove) labels on a Deployment's pod template."""
    def apply(lab: model.Lab) -> model.Lab:
        _require([f"{d.namespace}/{d.name}" for d in lab.deployments],
                 f"{namespace}/{deployment}", "deployment")
        return replace(lab, deployments=[
            replace(d, labels=_labels(d.labels, labels))
            if (d.namespace, d.name) == (namespace, deployment) else d
            for d in lab.deployments])
    return apply


def _edit_service(namespace: str, service: str,
                  edit: Callable[[model.Service], model.Service]) -> Change:
    """A change that rewrites one Service (which must exist) and leaves the rest alone."""
    def apply(lab: model.Lab) -> model.Lab:
        _require([f"{s.namespace}/{s.name}" for s in lab.services],
                 f"{namespace}/{service}", "service")
        return replace(lab, services=[edit(s) if (s.namespace, s.name) == (namespace, service) else s
                                      for s in lab.services])
    return apply


def service_port(namespace: str, service: str, port: int, **fields: object) -> Change:
    """Change fields of one Service port: `name=None` (unnamed), `app_protocol="tcp"`, …"""
    return _edit_service(namespace, service, lambda s: replace(s, ports=[
        replace(p, **fields) if p.port == port else p for p in s.ports]))  # type: ignore[arg-type]


def service_target_port(namespace: str, service: str, port: int,
                        target_port: int | str) -> Change:
    """Point one Service port at another target port (a closed one, say)."""
    return service_port(namespace, service, port, target_port=target_port)


def annotate_service(namespace: str, service: str, annotations: dict[str, str | None]) -> Change:
    """Set (or, with None, remove) annotations on a Service's metadata."""
    return _edit_service(namespace, service,
                         lambda s: replace(s, annotations=_labels(s.annotations, annotations)))


def container_args(namespace: str, deployment: str, container: str,
                   append: list[str]) -> Change:
    """Append arguments to one container's `args:` (a flag the app is started with)."""
    def apply(lab: model.Lab) -> model.Lab:
        _require([f"{d.namespace}/{d.name}" for d in lab.deployments],
                 f"{namespace}/{deployment}", "deployment")
        out = []
        for d in lab.deployments:
            if (d.namespace, d.name) == (namespace, deployment):
                _require([c.name for c in d.containers], container, "container")
                d = replace(d, containers=[replace(c, args=[*c.args, *append])
                                           if c.name == container else c
                                           for c in d.containers])
            out.append(d)
        return replace(lab, deployments=out)
    return apply


def remove(kind: str, namespace: str, name: str) -> Change:
    """Remove one kept resource (a PeerAuthentication, …); it must exist."""
    def apply(lab: model.Lab) -> model.Lab:
        _require([f"{r.kind} {r.namespace}/{r.name}" for r in lab.resources],
                 f"{kind} {namespace}/{name}", "resource")
        return replace(lab, resources=[r for r in lab.resources
                                       if (r.kind, r.namespace, r.name) != (kind, namespace, name)])
    return apply


def add(*resources: model.Resource) -> Change:
    """Add kept resources (an AuthorizationPolicy, a PeerAuthentication, …)."""
    return lambda lab: replace(lab, resources=[*lab.resources, *resources])


def _require(names: Iterable[str], name: str, what: str) -> None:
    names = list(names)
    if name not in names:
        raise KeyError(f"no {what} {name!r} in the lab's topology (there are: "
                       f"{', '.join(names) or 'none'})")
