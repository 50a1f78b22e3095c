"""Service documents → model.Service (type ClusterIP only).

A clusterIP given here is kept as written; the planner allocates the rest. Whether it
fits the Lab's serviceCIDR, and whether named targetPorts exist on the selected pods,
needs other documents and is checked in references.py.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from netlab.model import Service, ServicePort
import netlab.topology.ignored as ignored
from netlab.topology.deployment import PORT_NAME, PORT_NAME_HELP, check_not_proxy_port, port_protocol
from netlab.topology.documents import Document, index, join
from netlab.topology.fields import (NAME, NAME_HELP, SERVICE_NAME, SERVICE_NAME_HELP, check_fields, integer,
                                    mapping, required, sequence, string, string_map, wrong_type)
from netlab.topology.objects import envelope, metadata


def parse_service(doc: Document) -> Service:
    envelope(doc)
    meta = metadata(doc, namespaced=True, name_pattern=SERVICE_NAME, name_help=SERVICE_NAME_HELP)
    spec = mapping(doc, required(doc, doc.data, "", "spec", "spec: {selector: {app: my-app}, ports: [...]}"),
                   "spec")
    check_fields(doc, spec, "spec", ("type", "clusterIP", "ports", "selector"), ignored.SERVICE_SPEC,
                 ignored.UNSUPPORTED_SERVICE_SPEC)
    kind = string(doc, spec, "spec", "type", default="ClusterIP")
    if kind != "ClusterIP":
        raise doc.error("spec.type", f"Service type {kind!r} is not supported",
                        "use type: ClusterIP (or leave type out); netlab has no node ports or load balancers")
    selector = string_map(doc, spec, "spec", "selector")
    if not selector:
        raise doc.error("spec.selector", "the Service has no selector",
                        "add selector: {app: my-app} naming the pod labels; netlab has no manual Endpoints")
    return Service(namespace=meta.namespace, name=meta.name, ports=_ports(doc, spec), selector=selector,
                   cluster_ip=_cluster_ip(doc, spec), labels=meta.labels, source=doc.source(),
                   annotations=meta.annotations)


def _cluster_ip(doc: Document, spec: dict[str, Any]) -> str | None:
    value = string(doc, spec, "spec", "clusterIP")
    if value is None or value == "":
        return None
    if value == "None":
        raise doc.error("spec.clusterIP", "headless Services (clusterIP: None) are not supported",
                        "remove clusterIP to get an allocated one, or give an address in the serviceCIDR")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise doc.error("spec.clusterIP", f"{value!r} is not an IP address",
                        "give an IPv4 address inside the Lab's serviceCIDR, or remove clusterIP") from None
    if address.version != 4:
        raise doc.error("spec.clusterIP", f"{value} is not IPv4", "give an IPv4 address; netlab is IPv4 only")
    return str(address)


def _ports(doc: Document, spec: dict[str, Any]) -> list[ServicePort]:
    base = "spec.ports"
    items = sequence(doc, spec, "spec", "ports")
    if not items:
        raise doc.error(base, "the Service has no ports", "add ports: [{name: http, port: 80, targetPort: 8080}]")
    ports: list[ServicePort] = []
    for i, item in enumerate(items):
        here = index(base, i)
        p = mapping(doc, item, here)
        check_fields(doc, p, here, ("name", "port", "targetPort", "protocol", "appProtocol"), ignored.SERVICE_PORT)
        name = string(doc, p, here, "name", pattern=NAME, pattern_help=NAME_HELP)
        if len(items) > 1 and not name:
            raise doc.error(join(here, "name"), "a Service with several ports must name each one",
                            "add name: to every port, e.g. name: http")
        if name and any(q.name == name for q in ports):
            raise doc.error(join(here, "name"), f"port name {name!r} is used twice", "give each port its own name")
        number = integer(doc, p, here, "port", low=1, high=65535, required_example="port: 80")
        protocol = port_protocol(doc, p, here)
        if any(q.port == number and q.protocol == protocol for q in ports):
            raise doc.error(join(here, "port"), f"port {number}/{protocol} is listed twice", "list each port once")
        ports.append(ServicePort(port=number, target_port=_target_port(doc, p, here, number),  # type: ignore[arg-type]
                                 name=name, protocol=protocol,  # type: ignore[arg-type]
                                 app_protocol=string(doc, p, here, "appProtocol")))
    return ports


def _target_port(doc: Document, p: dict[str, Any], path: str, port: int) -> int | str:
    """An int, or the name of a containerPort; defaults to `port` as in Kubernetes."""
    value = p.get("targetPort")
    here = join(path, "targetPort")
    if value is None:
        check_not_proxy_port(doc, join(path, "port"), port)  # the target defaults to it
        return port
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise wrong_type(doc, here, value, "a port number or a containerPort name")
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            raise doc.error(here, f"{value} is out of range", "use a port from 1 to 65535")
        check_not_proxy_port(doc, here, value)
        return value
    if value.isdigit():
        raise doc.error(here, f"targetPort {value!r} is quoted, so it reads as a port name",
                        f"remove the quotes: targetPort: {value}")
    if not PORT_NAME.match(value):
        raise doc.error(here, f"{value!r} is not a valid port name", PORT_NAME_HELP)
    return value
