"""Deployment, StatefulSet and Pod documents → model.Deployment (its `kind` says which).

Only what shapes the dataplane is read: replicas, placement (nodeName, nodeSelector,
required node affinity, topologySpreadConstraints), identity (service account), labels
and annotations (mesh opt-in and opt-out), and each container's process, ports and env.
Checks that need other documents (nodes, service accounts) live in references.py.
"""

from __future__ import annotations

import os
import re
from typing import Any

from netlab.mesh import PROXY_PORTS
from netlab.model import BUILTIN_IMAGES, Container, ContainerPort, Deployment, NodeRequirement, SpreadConstraint
import netlab.topology.exported as exported
import netlab.topology.ignored as ignored
from netlab.topology.documents import Document, index, join
from netlab.topology.fields import (NAME, NAME_HELP, SUBDOMAIN, SUBDOMAIN_HELP, check_fields, integer, mapping,
                                    required, sequence, string, string_list, string_map, suggest, wrong_type)
from netlab.topology.objects import envelope, metadata

# IANA service name, as Kubernetes requires for port names: at most 15 characters,
# lowercase letters, digits and single '-' inside, with at least one letter.
PORT_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$")
PORT_NAME_HELP = "use at most 15 lowercase letters, digits and '-', with at least one letter (e.g. http)"
PROTOCOLS = ("TCP", "UDP")
# Kubernetes' rule for environment variable names (validation.IsEnvVarName): no '=',
# which would split the NAME=value pair, and no leading digit.
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
ENV_NAME_HELP = "use letters, digits, '_', '-' and '.', not starting with a digit, e.g. GREETING"

TEMPLATE = "spec.template"
POD = "spec.template.spec"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
WHEN_UNSATISFIABLE = ("DoNotSchedule", "ScheduleAnyway")


def parse_deployment(doc: Document) -> Deployment:
    return _replicated(doc, "Deployment", ("replicas", "selector", "template"), ignored.DEPLOYMENT_SPEC, {})


def parse_statefulset(doc: Document) -> Deployment:
    """A StatefulSet: like a Deployment for the dataplane, with its stable pod names
    (`<name>-0`, `<name>-1`, ...). Storage and update fields are accepted and ignored."""
    return _replicated(doc, "StatefulSet", ("replicas", "selector", "template", "serviceName"),
                       ignored.STATEFULSET_SPEC, ignored.UNSUPPORTED_STATEFULSET_SPEC)


def parse_pod(doc: Document) -> Deployment:
    """A bare Pod: one pod with its own name; its labels and annotations are its metadata's."""
    envelope(doc)
    meta = metadata(doc, namespaced=True)
    spec = mapping(doc, required(doc, doc.data, "", "spec", "spec: {containers: [...]}"), "spec")
    return Deployment(namespace=meta.namespace, name=meta.name, replicas=1, labels=meta.labels,
                      annotations=meta.annotations, source=doc.source(), kind="Pod", **_pod_spec(doc, spec, "spec"))


def _replicated(doc: Document, kind: str, known: tuple[str, ...], ignore: tuple[str, ...],
                unsupported: dict[str, str]) -> Deployment:
    envelope(doc)
    meta = metadata(doc, namespaced=True)
    spec = mapping(doc, required(doc, doc.data, "", "spec", "spec: {replicas: 1, selector: ..., template: ...}"),
                   "spec")
    check_fields(doc, spec, "spec", known, ignore, unsupported)
    string(doc, spec, "spec", "serviceName", pattern=NAME, pattern_help=NAME_HELP)  # read to check only
    replicas = integer(doc, spec, "spec", "replicas", default=1, low=0, high=64)
    template = mapping(doc, required(doc, spec, "spec", "template", "template: {metadata: ..., spec: ...}"),
                       TEMPLATE)
    check_fields(doc, template, TEMPLATE, ("metadata", "spec"))
    tmeta_path = join(TEMPLATE, "metadata")
    tmeta = mapping(doc, template.get("metadata"), tmeta_path)
    check_fields(doc, tmeta, tmeta_path, ("labels", "annotations"), ignored.POD_TEMPLATE_METADATA)
    labels = string_map(doc, tmeta, tmeta_path, "labels")
    annotations = string_map(doc, tmeta, tmeta_path, "annotations")
    _check_selector(doc, spec, labels)
    pod = mapping(doc, required(doc, template, TEMPLATE, "spec", "spec: {containers: [...]}"), POD)
    pod, annotations = exported.restore(doc, pod, annotations)  # `netlab export`'s files read as the originals
    return Deployment(namespace=meta.namespace, name=meta.name, replicas=replicas,  # type: ignore[arg-type]
                      labels=labels, annotations=annotations, source=doc.source(), kind=kind,  # type: ignore[arg-type]
                      **_pod_spec(doc, pod, POD))


def _pod_spec(doc: Document, pod: dict[str, Any], path: str) -> dict[str, Any]:
    """The fields of a pod spec that shape the dataplane: identity, placement, containers."""
    check_fields(doc, pod, path, ("serviceAccountName", "nodeName", "nodeSelector", "containers", "affinity",
                                  "topologySpreadConstraints"),
                 ignored.POD_SPEC, ignored.UNSUPPORTED_POD_SPEC)
    node_name = string(doc, pod, path, "nodeName", pattern=NAME, pattern_help=NAME_HELP)
    node_selector = string_map(doc, pod, path, "nodeSelector")
    if node_name and node_selector:
        raise doc.error(join(path, "nodeSelector"), "both nodeName and nodeSelector are given",
                        "keep one: nodeName pins every replica to one node, nodeSelector lets "
                        "replicas spread over the matching nodes")
    return {"service_account": string(doc, pod, path, "serviceAccountName", default="default",
                                      pattern=SUBDOMAIN, pattern_help=SUBDOMAIN_HELP),
            "node_name": node_name, "node_selector": node_selector,
            "containers": _containers(doc, pod, path),
            "affinity": _affinity(doc, pod, path), "spread": _spread(doc, pod, path)}


def _affinity(doc: Document, pod: dict[str, Any], path: str) -> tuple[tuple[NodeRequirement, ...], ...]:
    """affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms."""
    here = join(path, "affinity")
    affinity = mapping(doc, pod.get("affinity"), here)
    check_fields(doc, affinity, here, ("nodeAffinity",), (), ignored.UNSUPPORTED_AFFINITY)
    here = join(here, "nodeAffinity")
    node = mapping(doc, affinity.get("nodeAffinity"), here)
    check_fields(doc, node, here, ("requiredDuringSchedulingIgnoredDuringExecution",), (),
                 ignored.UNSUPPORTED_NODE_AFFINITY)
    here = join(here, "requiredDuringSchedulingIgnoredDuringExecution")
    required_ = mapping(doc, node.get("requiredDuringSchedulingIgnoredDuringExecution"), here)
    if "requiredDuringSchedulingIgnoredDuringExecution" not in node:
        return ()
    check_fields(doc, required_, here, ("nodeSelectorTerms",))
    terms_path = join(here, "nodeSelectorTerms")
    items = sequence(doc, required_, here, "nodeSelectorTerms")
    if not items:
        raise doc.error(terms_path, "nodeSelectorTerms is empty, so no node can match",
                        "add a term, e.g. - matchExpressions: [{key: topology.kubernetes.io/zone, "
                        "operator: In, values: [zone-a]}]")
    terms = []
    for i, item in enumerate(items):
        term_path = index(terms_path, i)
        term = mapping(doc, item, term_path)
        check_fields(doc, term, term_path, ("matchExpressions",), (), ignored.UNSUPPORTED_NODE_SELECTOR_TERM)
        exprs = sequence(doc, term, term_path, "matchExpressions")
        if not exprs:
            raise doc.error(term_path, "an empty node selector term matches no node (Kubernetes' rule)",
                            "give it matchExpressions, or remove the term")
        terms.append(tuple(_requirement(doc, e, index(join(term_path, "matchExpressions"), j))
                           for j, e in enumerate(exprs)))
    return tuple(terms)


def _requirement(doc: Document, item: Any, path: str) -> NodeRequirement:
    e = mapping(doc, item, path)
    check_fields(doc, e, path, ("key", "operator", "values"), (), ignored.UNSUPPORTED_OPERATOR_FIELDS)
    key = string(doc, e, path, "key", required_example="key: topology.kubernetes.io/zone")
    operator = string(doc, e, path, "operator", required_example="operator: In")
    if operator not in OPERATORS:
        fix = ("netlab's nodes have no numeric labels to compare; use In, NotIn, Exists or DoesNotExist"
               if operator in ("Gt", "Lt") else f"use one of {', '.join(OPERATORS)}{suggest(str(operator), OPERATORS)}")
        raise doc.error(join(path, "operator"), f"operator {operator!r} is not supported", fix)
    values = string_list(doc, e, path, "values")
    if operator in ("In", "NotIn") and not values:
        raise doc.error(join(path, "values"), f"operator {operator} needs at least one value",
                        "list the label values, e.g. values: [zone-a]")
    if operator in ("Exists", "DoesNotExist") and values:
        raise doc.error(join(path, "values"), f"operator {operator} takes no values (Kubernetes' rule)",
                        "remove values")
    return NodeRequirement(key, operator, tuple(values))  # type: ignore[arg-type]


def _spread(doc: Document, pod: dict[str, Any], path: str) -> tuple[SpreadConstraint, ...]:
    base = join(path, "topologySpreadConstraints")
    out = []
    for i, item in enumerate(sequence(doc, pod, path, "topologySpreadConstraints")):
        here = index(base, i)
        c = mapping(doc, item, here)
        check_fields(doc, c, here, ("maxSkew", "topologyKey", "whenUnsatisfiable", "labelSelector"), (),
                     ignored.UNSUPPORTED_SPREAD)
        skew = integer(doc, c, here, "maxSkew", low=1, high=1000, required_example="maxSkew: 1")
        key = string(doc, c, here, "topologyKey", required_example="topologyKey: kubernetes.io/hostname")
        when = string(doc, c, here, "whenUnsatisfiable", required_example="whenUnsatisfiable: DoNotSchedule")
        if when not in WHEN_UNSATISFIABLE:
            raise doc.error(join(here, "whenUnsatisfiable"), f"{when!r} is not a whenUnsatisfiable value"
                            f"{suggest(str(when), WHEN_UNSATISFIABLE)}", f"use {' or '.join(WHEN_UNSATISFIABLE)}")
        match = None
        if "labelSelector" in c:
            sel_path = join(here, "labelSelector")
            sel = mapping(doc, c.get("labelSelector"), sel_path)
            check_fields(doc, sel, sel_path, ("matchLabels",), (), ignored.UNSUPPORTED_SELECTOR)
            match = string_map(doc, sel, sel_path, "matchLabels")
        out.append(SpreadConstraint(skew, key, when, match))  # type: ignore[arg-type]
    return tuple(out)


def _check_selector(doc: Document, spec: dict[str, Any], labels: dict[str, str]) -> None:
    """apps/v1 requires a selector, and it must select the Deployment's own pods."""
    path = "spec.selector"
    selector = mapping(doc, required(doc, spec, "spec", "selector", "selector: {matchLabels: {app: my-app}}"),
                       path)
    check_fields(doc, selector, path, ("matchLabels",), (), ignored.UNSUPPORTED_SELECTOR)
    match = string_map(doc, selector, path, "matchLabels")
    if not match:
        raise doc.error(join(path, "matchLabels"), "the selector is empty",
                        "add matchLabels naming a pod template label, e.g. matchLabels: {app: my-app}")
    for key, value in match.items():
        if labels.get(key) != value:
            have = f"the template has {key}: {labels[key]!r}" if key in labels else \
                f"the template has no label {key!r}"
            raise doc.error(join(join(path, "matchLabels"), key),
                            f"selector {key}: {value!r} does not match the pod template labels ({have})",
                            f"make spec.template.metadata.labels contain {key}: {value}")


def _containers(doc: Document, pod: dict[str, Any], pod_path: str) -> list[Container]:
    path = join(pod_path, "containers")
    items = sequence(doc, pod, pod_path, "containers")
    if not items:
        raise doc.error(path, "a pod needs at least one container",
                        "add containers: [{name: app, image: netlab/http-echo}]")
    containers: list[Container] = []
    port_names: dict[str, str] = {}
    port_owners: dict[tuple[int, str], str] = {}
    for i, item in enumerate(items):
        here = index(path, i)
        container = _container(doc, mapping(doc, item, here), here)
        if any(c.name == container.name for c in containers):
            raise doc.error(join(here, "name"), f"container name {container.name!r} is used twice",
                            "give each container in the pod its own name")
        for j, port in enumerate(container.ports):
            owner = port_owners.setdefault((port.container_port, port.protocol), container.name)
            if owner != container.name:
                raise doc.error(join(index(join(here, "ports"), j), "containerPort"),
                                f"containerPort {port.container_port}/{port.protocol} is already declared by "
                                f"container {owner!r}",
                                "containers of one pod share its network namespace, so only one can listen "
                                "on a port; give this one another port")
            if port.name and port.name in port_names:
                raise doc.error(join(index(join(here, "ports"), j), "name"),
                                f"port name {port.name!r} is already used by container {port_names[port.name]!r}",
                                "port names must be unique within a pod; rename one")
            if port.name:
                port_names[port.name] = container.name
        containers.append(container)
    return containers


def _container(doc: Document, c: dict[str, Any], path: str) -> Container:
    check_fields(doc, c, path, ("name", "image", "command", "args", "ports", "env"),
                 ignored.CONTAINER, ignored.UNSUPPORTED_CONTAINER)
    name = string(doc, c, path, "name", pattern=NAME, pattern_help=NAME_HELP, required_example="name: app")
    image = string(doc, c, path, "image", required_example="image: netlab/http-echo")
    command = _argv(doc, c, path, "command")
    if image not in BUILTIN_IMAGES and not command:
        raise doc.error(join(path, "image"),
                        f"image {image!r} is not built in, and no command is given to run instead",
                        f"use a built-in image ({', '.join(BUILTIN_IMAGES)}) or add command: [...] "
                        "naming a program on this machine to run in the pod")
    if command:
        _check_program(doc, index(join(path, "command"), 0), command[0])
    return Container(name=name, image=image, command=command,  # type: ignore[arg-type]
                     args=_argv(doc, c, path, "args"), ports=_ports(doc, c, path), env=_env(doc, c, path))


def _argv(doc: Document, c: dict[str, Any], path: str, key: str) -> list[str]:
    """command or args: text that execve can pass, so no NUL byte (it would end the string)."""
    items = string_list(doc, c, path, key)
    for i, item in enumerate(items):
        if "\0" in item:
            raise doc.error(index(join(path, key), i), f"{key}[{i}] contains a NUL byte (\\0)",
                            "remove it; a program argument ends at the first NUL, so it cannot be passed")
    return items


def _check_program(doc: Document, path: str, program: str) -> None:
    """An absolute program path can be checked now, before anything is built.

    A bare name (`python3`) is looked up on PATH inside the pod when it starts, so a
    missing one is reported then, by the process start, not here.
    """
    if not program:
        raise doc.error(path, "the program to run is empty", "name a program, e.g. command: [/usr/bin/python3, ...]")
    if not os.path.isabs(program):
        return
    if not os.path.exists(program):
        raise doc.error(path, f"program {program!r} does not exist on this machine",
                        "give the path of an installed program (check it with `ls -l`), or a name found on PATH")
    if os.path.isdir(program) or not os.access(program, os.X_OK):
        raise doc.error(path, f"{program!r} is not an executable file",
                        "name an executable program, or make it executable with chmod +x")


def port_protocol(doc: Document, p: dict[str, Any], path: str) -> str:
    """A port's `protocol`: TCP when absent, else one we can build (shared with Service ports)."""
    protocol = string(doc, p, path, "protocol", default="TCP")
    if protocol not in PROTOCOLS:
        raise doc.error(join(path, "protocol"), f"protocol {protocol!r} is not supported",
                        f"use one of {', '.join(PROTOCOLS)} (upper case)")
    return protocol  # type: ignore[return-value]


def _ports(doc: Document, c: dict[str, Any], path: str) -> list[ContainerPort]:
    ports: list[ContainerPort] = []
    base = join(path, "ports")
    for i, item in enumerate(sequence(doc, c, path, "ports")):
        here = index(base, i)
        p = mapping(doc, item, here)
        check_fields(doc, p, here, ("containerPort", "name", "protocol"), (), ignored.UNSUPPORTED_CONTAINER_PORT)
        number = integer(doc, p, here, "containerPort", low=1, high=65535, required_example="containerPort: 8080")
        check_not_proxy_port(doc, join(here, "containerPort"), number)  # type: ignore[arg-type]
        protocol = port_protocol(doc, p, here)
        if any(q.container_port == number and q.protocol == protocol for q in ports):
            raise doc.error(join(here, "containerPort"), f"containerPort {number}/{protocol} is listed twice",
                            "list each port once")
        ports.append(ContainerPort(container_port=number,  # type: ignore[arg-type]
                                   name=string(doc, p, here, "name", pattern=PORT_NAME, pattern_help=PORT_NAME_HELP),
                                   protocol=protocol))  # type: ignore[arg-type]
    return ports


def check_not_proxy_port(doc: Document, path: str, port: int) -> None:
    """Refuse a port the mesh's proxies claim in every pod (shared with Service targetPorts)."""
    if port in PROXY_PORTS:
        raise doc.error(path, f"port {port} is reserved for the mesh's proxies "
                              f"({', '.join(str(p) for p in sorted(PROXY_PORTS))})",
                        "use another port for the application; Istio's proxies listen on these in every pod")


def _env(doc: Document, c: dict[str, Any], path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    base = join(path, "env")
    for i, item in enumerate(sequence(doc, c, path, "env")):
        here = index(base, i)
        e = mapping(doc, item, here)
        check_fields(doc, e, here, ("name", "value"), (), ignored.UNSUPPORTED_ENV)
        name = string(doc, e, here, "name", pattern=ENV_NAME, pattern_help=ENV_NAME_HELP,
                      required_example="name: GREETING")
        if name in env:
            raise doc.error(join(here, "name"), f"variable {name!r} is set twice", "keep one of the two")
        value = e.get("value", "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise wrong_type(doc, join(here, "value"), value, "a string")
        if "\0" in value:
            raise doc.error(join(here, "value"), "the value contains a NUL byte (\\0)",
                            "remove it; an environment variable ends at the first NUL")
        env[name] = value  # type: ignore[index]
    return env
