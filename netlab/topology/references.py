"""Checks across documents, then assembly of the Lab.

A reference may point forward or into another file (a Deployment before its Namespace),
so these run after every document has been parsed. Each error still points at the
referring field, with the line recorded when its document was read.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Union

from netlab.errors import TopologyError
from netlab.model import (BYPASS_INBOUND_ANNOTATION, RESERVED_SERVICE_OFFSETS, Deployment, Lab, Namespace,
                          Resource, Service, ServiceAccount)
from netlab.topology.documents import Document, index, join
from netlab.topology.fields import suggest
from netlab.topology.header import LabHeader
from netlab.topology.injection import check_deployment as check_injection
from netlab.topology.injection import check_namespace as check_namespace_profile
from netlab.topology.objects import DEFAULT_NAMESPACE, Ignored
from netlab.topology.placement import Unschedulable, nodes_for, schedule

# Namespaces every lab has without declaring them: Kubernetes' "default", and Istio's
# root namespace, where mesh-wide PeerAuthentication and AuthorizationPolicy live.
IMPLICIT_NAMESPACES = (DEFAULT_NAMESPACE, "istio-system")
DEFAULT_SERVICE_ACCOUNT = "default"
MAX_PODS = 256
"""Pods one lab may have, summed over every Deployment's replicas."""

Parsed = Union[Namespace, ServiceAccount, Deployment, Service, Resource, Ignored]

LAB_EXAMPLE = ("add a document like:\n"
               "    apiVersion: netlab.dev/v1alpha1\n"
               "    kind: Lab\n"
               "    metadata: {name: my-lab}\n"
               "    spec: {nodes: [{name: node-1}]}")


@dataclass
class Collected:
    """What the per-document parsers produced, in load order."""

    header: LabHeader | None = None
    objects: list[tuple[Parsed, Document]] = field(default_factory=list)


def _kind(obj: Parsed) -> str:
    return obj.kind if isinstance(obj, (Resource, Ignored, Deployment)) else type(obj).__name__


def _namespace_of(obj: Parsed) -> str | None:
    return None if isinstance(obj, Namespace) else obj.namespace


def build_lab(collected: Collected, files: list[str], name_override: str | None) -> Lab:
    header = collected.header
    if header is None:
        raise TopologyError(", ".join(files), None, "", "no Lab document found", LAB_EXAMPLE)
    _reject_duplicates(collected.objects)
    namespaces = [o for o, _ in collected.objects if isinstance(o, Namespace)]
    declared = {n.name for n in namespaces}
    namespaces += [Namespace(name=n) for n in IMPLICIT_NAMESPACES if n not in declared]
    ns_names = [n.name for n in namespaces]
    accounts = [o for o, _ in collected.objects if isinstance(o, ServiceAccount)]
    have = {(a.namespace, a.name) for a in accounts}
    accounts += [ServiceAccount(namespace=n, name=DEFAULT_SERVICE_ACCOUNT) for n in ns_names
                 if (n, DEFAULT_SERVICE_ACCOUNT) not in have]
    account_keys = {(a.namespace, a.name) for a in accounts}

    deployments = [(o, d) for o, d in collected.objects if isinstance(o, Deployment)]
    # Deployments by (namespace, label, value): a Service's first selector pair picks its
    # candidates, so matching stays linear however many Services and Deployments there are.
    by_label: dict[tuple[str, str, str], list[tuple[Deployment, Document]]] = {}
    for dep, dep_doc in deployments:
        for key, value in dep.labels.items():
            by_label.setdefault((dep.namespace, key, value), []).append((dep, dep_doc))
    _check_pod_count(deployments)
    _check_pod_names(deployments)
    cluster_ips: dict[str, tuple[Service, Document]] = {}
    service_net = ipaddress.IPv4Network(header.service_cidr)
    for obj, doc in collected.objects:
        ns = _namespace_of(obj)
        if ns is not None and ns not in ns_names:
            raise doc.error("metadata.namespace" if "namespace" in (doc.data.get("metadata") or {}) else "metadata",
                            f"namespace {ns!r} is not declared{suggest(ns, ns_names)}",
                            f"add a document 'apiVersion: v1, kind: Namespace, metadata: {{name: {ns}}}', "
                            f"or use one of: {', '.join(ns_names)}")
        if isinstance(obj, Namespace):
            check_namespace_profile(obj, doc, header)
        if isinstance(obj, Deployment):
            _check_deployment(obj, doc, header, account_keys)
            check_injection(obj, doc, header)
        elif isinstance(obj, Service):
            first = next(iter(obj.selector.items()))
            _check_service(obj, doc, service_net, cluster_ips, by_label.get((obj.namespace, *first), []))
    _check_service_addresses([(o, d) for o, d in collected.objects if isinstance(o, Service)], service_net,
                             header)
    _check_schedulable(header, deployments)

    return Lab(
        name=name_override or header.name, nodes=header.nodes, istio_version=header.istio_version,
        istio_profile=header.istio_profile,
        trust_domain=header.trust_domain, pod_cidr=header.pod_cidr, service_cidr=header.service_cidr,
        namespaces=namespaces, service_accounts=accounts, deployments=[o for o, _ in deployments],
        services=[o for o, _ in collected.objects if isinstance(o, Service)],
        resources=[o for o, _ in collected.objects if isinstance(o, Resource)], files=list(files),
        prometheus=header.prometheus,
        notes=[o.note for o, _ in collected.objects if isinstance(o, Ignored)],
    )


def _reject_duplicates(objects: list[tuple[Parsed, Document]]) -> None:
    seen: dict[tuple[str, str | None, str], Document] = {}
    for obj, doc in objects:
        key = (_kind(obj), _namespace_of(obj), obj.name)
        if key in seen:
            first = seen[key]
            where = f"namespace {key[1]!r}" if key[1] is not None else "the lab"
            raise doc.error("metadata.name",
                            f"{key[0]} {obj.name!r} is already declared in {where} "
                            f"({first.file}, document {first.number})",
                            "rename one of them, or delete the duplicate")
        seen[key] = doc


def pod_path(dep: Deployment) -> str:
    """Where the pod spec is in the workload's document."""
    return "spec" if dep.kind == "Pod" else "spec.template.spec"


def _check_deployment(dep: Deployment, doc: Document, header: LabHeader,
                      accounts: set[tuple[str, str]]) -> None:
    pod = pod_path(dep)
    if (dep.namespace, dep.service_account) not in accounts:
        in_ns = sorted(name for ns, name in accounts if ns == dep.namespace)
        raise doc.error(join(pod, "serviceAccountName"),
                        f"ServiceAccount {dep.service_account!r} is not declared in namespace {dep.namespace!r}"
                        f"{suggest(dep.service_account, in_ns)}",
                        f"add a document 'apiVersion: v1, kind: ServiceAccount, metadata: "
                        f"{{name: {dep.service_account}, namespace: {dep.namespace}}}', or use one of: "
                        f"{', '.join(in_ns)}")
    if header.istio_version == "1.23" and dep.annotations.get(BYPASS_INBOUND_ANNOTATION) == "true":
        # Istio's 1.23 golden files have no bypass case, so there are no verified rules to install.
        raise doc.error(join("metadata.annotations" if dep.kind == "Pod" else "spec.template.metadata.annotations",
                             BYPASS_INBOUND_ANNOTATION),
                        f"{BYPASS_INBOUND_ANNOTATION} is only modelled for Istio 1.24+ (REDIRECT mode)",
                        "remove the annotation, or set spec.istio.version: \"1.24+\" in the Lab document")
    node_names = [n.name for n in header.nodes]
    if dep.node_name and dep.node_name not in node_names:
        raise doc.error(join(pod, "nodeName"),
                        f"node {dep.node_name!r} is not a Lab node{suggest(dep.node_name, node_names)}",
                        f"use one of the nodes in the Lab document: {', '.join(node_names)}")
    if not nodes_for(header.nodes, dep):
        labels = "; ".join(f"{n.name}: {n.labels}" for n in header.nodes)
        if dep.affinity:
            raise doc.error(join(join(pod, "affinity"), "nodeAffinity"),
                            "no node matches the required node affinity"
                            + (f" together with nodeSelector {dep.node_selector}" if dep.node_selector else "")
                            + (f" and nodeName {dep.node_name}" if dep.node_name else ""),
                            f"match labels a node has ({labels}), or add the labels to a node in the Lab document")
        raise doc.error(join(pod, "nodeSelector"), f"nodeSelector {dep.node_selector} matches no node",
                        f"match labels a node has ({labels}), or add the labels to a node in the Lab document")


def _check_service(svc: Service, doc: Document, service_net: ipaddress.IPv4Network,
                   cluster_ips: dict[str, tuple[Service, Document]],
                   deployments: list[tuple[Deployment, Document]]) -> None:
    """`deployments`: those of the Service's namespace carrying its first selector label."""
    if svc.cluster_ip is not None:
        ip = ipaddress.IPv4Address(svc.cluster_ip)
        if ip not in service_net or ip in (service_net.network_address, service_net.broadcast_address):
            raise doc.error("spec.clusterIP", f"clusterIP {ip} is not a usable address in serviceCIDR {service_net}",
                            f"pick an address inside {service_net} (not its first or last), or remove clusterIP")
        offset = int(ip) - int(service_net.network_address)
        if offset in RESERVED_SERVICE_OFFSETS:
            raise doc.error("spec.clusterIP", f"clusterIP {ip} is reserved: it is {RESERVED_SERVICE_OFFSETS[offset]}",
                            f"pick another address in {service_net}, or remove clusterIP to have one allocated")
        if svc.cluster_ip in cluster_ips:
            other, other_doc = cluster_ips[svc.cluster_ip]
            raise doc.error("spec.clusterIP",
                            f"clusterIP {ip} is already used by Service {other.namespace}/{other.name} "
                            f"({other_doc.file}, document {other_doc.number})",
                            "give each Service its own clusterIP, or remove clusterIP to have one allocated")
        cluster_ips[svc.cluster_ip] = (svc, doc)
    selected = [d for d, _ in deployments if all(d.labels.get(k) == v for k, v in svc.selector.items())]
    for i, port in enumerate(svc.ports):
        if not isinstance(port.target_port, str):
            continue
        for dep in selected:
            names = [p.name for c in dep.containers for p in c.ports if p.name]
            if port.target_port not in names:
                listed = ", ".join(names) if names else "none"
                raise doc.error(join(index("spec.ports", i), "targetPort"),
                                f"targetPort {port.target_port!r} is not a containerPort name of Deployment "
                                f"{dep.namespace}/{dep.name}, which this Service selects "
                                f"(its port names: {listed}){suggest(port.target_port, names)}",
                                "name the port in the Deployment's containers[].ports[].name, "
                                "or use the port number as targetPort")


def _check_pod_names(deployments: list[tuple[Deployment, Document]]) -> None:
    """Pod names are unique in a namespace: a Pod `web-0` and replica 0 of `web` would be one
    network namespace. Workload names too, so every pod belongs to exactly one workload."""
    pods: dict[tuple[str, str], tuple[Deployment, Document]] = {}
    workloads: dict[tuple[str, str], tuple[Deployment, Document]] = {}
    for dep, doc in deployments:
        first = workloads.setdefault((dep.namespace, dep.name), (dep, doc))
        if first[0] is not dep:
            raise doc.error("metadata.name", f"{first[0].kind} {dep.name!r} in namespace {dep.namespace!r} "
                            f"has the same name ({first[1].file}, document {first[1].number})",
                            "give each Deployment, StatefulSet and Pod of a namespace its own name")
        for i in range(dep.replicas):
            name = dep.pod_name(i)
            first = pods.setdefault((dep.namespace, name), (dep, doc))
            if first[0] is not dep:
                raise doc.error("metadata.name", f"pod {dep.namespace}/{name} of {dep.kind} {dep.name!r} is also "
                                f"a pod of {first[0].kind} {first[0].name!r} ({first[1].file}, document "
                                f"{first[1].number})", "rename one of them so their pod names differ")


def _check_schedulable(header: LabHeader, deployments: list[tuple[Deployment, Document]]) -> None:
    """Run the scheduler now, as the planner will: a pod no node can take is refused here,
    at the constraint that rules every node out."""
    try:
        schedule(header.nodes, [d for d, _ in deployments])
    except Unschedulable as e:
        doc = next(d for dep, d in deployments if dep is e.deployment)
        pod = pod_path(e.deployment)
        at = (index(join(pod, "topologySpreadConstraints"), e.constraint) if e.constraint is not None
              else pod)
        raise doc.error(at, f"replica {e.replica} of {e.deployment.kind} {e.deployment.namespace}/"
                        f"{e.deployment.name} fits no node: {e.reason}",
                        "raise maxSkew, use whenUnsatisfiable: ScheduleAnyway, add nodes (or node labels), "
                        "or use fewer replicas") from None


def _check_pod_count(deployments: list[tuple[Deployment, Document]]) -> None:
    """Every pod is a network namespace with its own processes; past MAX_PODS a lab is no
    longer something one machine builds in seconds, and planning it would not stay cheap."""
    total = 0
    for dep, doc in deployments:
        total += dep.replicas
        if total > MAX_PODS:
            raise doc.error("spec.replicas", f"the lab would have more than {MAX_PODS} pods",
                            "use fewer replicas or Deployments; netlab builds each pod as a network namespace")


def _check_service_addresses(services: list[tuple[Service, Document]], service_net: ipaddress.IPv4Network,
                             header: LabHeader) -> None:
    """Every Service without a clusterIP needs a free address; say so now, not with a traceback at plan."""
    usable = service_net.num_addresses - 2 - len(RESERVED_SERVICE_OFFSETS)
    explicit = sum(1 for svc, _ in services if svc.cluster_ip is not None)
    allocated = 0
    for svc, doc in services:
        if svc.cluster_ip is not None:
            continue
        allocated += 1
        if explicit + allocated > usable:
            raise doc.error("metadata.name",
                            f"serviceCIDR {service_net} has no address left for Service {svc.namespace}/{svc.name} "
                            f"({usable} usable addresses, {len(services)} Services)",
                            f"use a larger serviceCIDR in the Lab document ({header.doc.file}, "
                            f"spec.network.serviceCIDR), e.g. 10.96.0.0/16")
