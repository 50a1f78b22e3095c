"""Waypoint mode: a `Gateway` of class `istio-waypoint` becomes a waypoint, as istiod makes it.

Three things istiod does for a waypoint, each a step here:

1. **The deployment controller** (`expand`, before pods are placed): the Gateway becomes
   a Deployment, a ServiceAccount and a ClusterIP Service, all named after it
   (`disableNameSuffix`), with the pod labels of mesh-facts-2 §C1. The pod is placed
   like any pod; `netlab.dev/node-name` on the Gateway (metadata or
   `spec.infrastructure.annotations`) pins it to a node, as `nodeName` would.
2. **Waypoint attachment** (`attach`): which Services and pods use which waypoint,
   from `istio.io/use-waypoint` (Service or pod label first, then the namespace's;
   `none` opts out; `istio.io/use-waypoint-namespace` names another namespace) and the
   waypoint's `istio.io/waypoint-for` (service, workload, all, none). The result is the
   `waypoint` field of the snapshot's Services and Workloads, which every ztunnel gets.
3. **The proxy**: one waypoint process in the waypoint pod's netns, with its snapshot.

The waypoint pod has `istio.io/dataplane-mode: none`: ambient never captures it, so a
waypoint's own traffic never meets a ztunnel's outbound side (never traverses a
waypoint twice). This mode runs first in the registry: its attachment must be in the
Services and pods before any other mode writes a snapshot.

Sources: istio/istio@1.24.0 `pilot/pkg/config/kube/gateway/deploymentcontroller.go`,
`manifests/charts/istio-control/istio-discovery/files/waypoint.yaml`,
`pilot/pkg/serviceregistry/kube/controller/ambient/waypoints.go`; `istioctl waypoint`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from netlab import mesh
from netlab.errors import TopologyError
from netlab.model import (Container, ContainerPort, Deployment, Lab, Resource, Service, ServiceAccount,
                          ServicePort, Source)
from netlab.plan import naming
from netlab.plan.modes.ambient import CA_IP  # the lab CA, which ambient mode plans
from netlab.plan.modes.base import MeshMode, PlanContext
from netlab.plan.profile import IstioProfile
from netlab.plan.state import ProcessSpec, RouteSpec, ScrapeTarget
from netlab.snapshot import (Bootstrap, CertAuthority, DnsProxy, HttpRoute, Policy, ProxySnapshot,
                             Workload)

NAME = "waypoint"
TRAFFIC_TYPES = ("service", "workload", "all", "none")
USE_WAYPOINT_NAMESPACE_LABEL = "istio.io/use-waypoint-namespace"
STATUS_PORT = mesh.HEALTH_PORT  # the waypoint Service's `status-port`
PROXY_IMAGE = "istio/proxyv2"  # only a label: the planner starts no app for it
WHY_NOT_123 = ("netlab models the waypoint path from Istio 1.24 sources (ztunnel 1.24's "
               "`forwarded: host=` picks the destination ztunnel's destination_service, and the "
               "waypoint telemetry was read in istio/proxy 1.24); a 1.23 waypoint is not modelled "
               "(docs/waypoint.md)")


@dataclass(frozen=True)
class Waypoint:
    """One waypoint Gateway, checked."""

    namespace: str
    name: str
    traffic: str  # what it serves: service | workload | all | none
    node: str | None  # the node its pod is pinned to, if the Gateway says so
    source: Source | None = None

    def fqdn(self, domain: str = mesh.DNS_DOMAIN) -> str:
        return mesh.service_fqdn(self.name, self.namespace, domain)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def serves(self, kind: str) -> bool:
        """Whether it takes traffic addressed to a `service` or to a `workload`."""
        return self.traffic in (kind, "all")

    def pod_labels(self) -> dict[str, str]:
        """The pod labels of §C1 (files/waypoint.yaml)."""
        return {mesh.GATEWAY_NAME_LABEL: self.name,
                mesh.GATEWAY_MANAGED_LABEL: mesh.WAYPOINT_MANAGED_VALUE,
                mesh.DATAPLANE_MODE_LABEL: "none",
                mesh.SIDECAR_INJECT: "false",
                mesh.CANONICAL_NAME_LABEL: self.name,
                mesh.CANONICAL_REVISION_LABEL: "latest"}


def _error(res: Resource | Any, path: str, problem: str, fix: str) -> TopologyError:
    src = getattr(res, "source", None)
    return TopologyError(src.file if src else "<lab>", src.document if src else None, path, problem, fix,
                         line=src.line if src else None)


def _label_path(key: str) -> str:
    return f'metadata.labels["{key}"]'


def is_waypoint_gateway(res: Resource) -> bool:
    return res.kind == "Gateway" and (res.spec or {}).get("gatewayClassName") == mesh.WAYPOINT_GATEWAY_CLASS


def waypoints(lab: Lab, profile: IstioProfile | None = None) -> list[Waypoint]:
    """The lab's waypoint Gateways, each checked; the first problem is a located error."""
    out = []
    nodes = [n.name for n in lab.nodes]
    for res in lab.kept("Gateway"):
        if not is_waypoint_gateway(res):
            continue
        if profile is not None and not profile.waypoints:
            raise _error(res, "spec.gatewayClassName",
                         f"a waypoint needs Istio 1.24+ in netlab, and this lab says {profile.version}: "
                         f"{WHY_NOT_123}",
                         'set spec.istio.version: "1.24+" in the Lab document, or remove this Gateway')
        listeners = (res.spec or {}).get("listeners") or []
        if not any(li.get("port") == mesh.HBONE_PORT and li.get("protocol") == "HBONE" for li in listeners):
            raise _error(res, "spec.listeners",
                         f"a waypoint Gateway needs a listener on port {mesh.HBONE_PORT} with protocol HBONE",
                         "use the listener `istioctl waypoint generate` writes: "
                         "listeners: [{name: mesh, port: 15008, protocol: HBONE}]")
        if res.name == "none":
            raise _error(res, "metadata.name", 'the waypoint name "none" is reserved: '
                         f"{mesh.USE_WAYPOINT_LABEL}: none means \"no waypoint\"", "rename the Gateway")
        traffic = res.labels.get(mesh.WAYPOINT_FOR_LABEL, mesh.WAYPOINT_FOR_DEFAULT)
        if traffic not in TRAFFIC_TYPES:
            raise _error(res, _label_path(mesh.WAYPOINT_FOR_LABEL),
                         f"{mesh.WAYPOINT_FOR_LABEL} {traffic!r} is not one of {', '.join(TRAFFIC_TYPES)}",
                         f"use one of {', '.join(TRAFFIC_TYPES)} (default {mesh.WAYPOINT_FOR_DEFAULT})")
        node, where = _node_annotation(res)
        if node is not None and node not in nodes:
            raise _error(res, where, f"node {node!r} is not a Lab node",
                         f"use one of the nodes in the Lab document: {', '.join(nodes)}")
        out.append(Waypoint(res.namespace, res.name, traffic, node, res.source))
    return out


def _node_annotation(res: Resource) -> tuple[str | None, str]:
    key = mesh.NODE_NAME_ANNOTATION
    infra = ((res.spec or {}).get("infrastructure") or {}).get("annotations") or {}
    if key in res.annotations:
        return res.annotations[key], f'metadata.annotations["{key}"]'
    if key in infra:
        return str(infra[key]), f'spec.infrastructure.annotations["{key}"]'
    return None, ""


# -- 1. the deployment controller ---------------------------------------------------------

def expand(lab: Lab, profile: IstioProfile | None = None) -> Lab:
    """`lab` plus each waypoint's ServiceAccount, Deployment and Service (named after it)."""
    wps = waypoints(lab, profile)
    if not wps:
        return lab
    taken = {(k, o.namespace, o.name) for k, objs in (("ServiceAccount", lab.service_accounts),
                                                        ("Deployment", lab.deployments),
                                                        ("Service", lab.services)) for o in objs}
    accounts, deployments, services = list(lab.service_accounts), list(lab.deployments), list(lab.services)
    for wp in wps:
        res = next(r for r in lab.kept("Gateway") if (r.namespace, r.name) == (wp.namespace, wp.name))
        for kind in ("Deployment", "Service"):
            if (kind, wp.namespace, wp.name) in taken:
                raise _error(res, "metadata.name",
                             f"the waypoint makes a {kind} named {wp.name!r} in {wp.namespace!r}, "
                             "and the lab already has one", "rename the Gateway or the other object")
        if ("ServiceAccount", wp.namespace, wp.name) not in taken:
            accounts.append(ServiceAccount(wp.namespace, wp.name, source=wp.source))
        labels = wp.pod_labels()
        deployments.append(Deployment(
            namespace=wp.namespace, name=wp.name, replicas=1, service_account=wp.name, labels=labels,
            annotations={}, node_name=wp.node, source=wp.source,
            containers=[Container(name="istio-proxy", image=PROXY_IMAGE, ports=[
                ContainerPort(mesh.HBONE_PORT, "mesh"), ContainerPort(STATUS_PORT, "status-port"),
                ContainerPort(mesh.METRICS_PORT, "metrics"),
                ContainerPort(mesh.ENVOY_STATS_PORT, "http-envoy-prom")])]))
        services.append(Service(
            namespace=wp.namespace, name=wp.name, selector={mesh.GATEWAY_NAME_LABEL: wp.name},
            labels={mesh.GATEWAY_NAME_LABEL: wp.name}, source=wp.source,
            ports=[ServicePort(STATUS_PORT, STATUS_PORT, name="status-port"),
                   ServicePort(mesh.HBONE_PORT, mesh.HBONE_PORT, name="mesh")]))
    return dataclasses.replace(lab, service_accounts=accounts, deployments=deployments, services=services)


# -- 2. attachment ------------------------------------------------------------------------

def _use_waypoint(labels: dict[str, str], own_ns: str) -> tuple[str, str] | None | bool:
    """(namespace, name) the labels ask for; False for `none`; None when they say nothing."""
    name = labels.get(mesh.USE_WAYPOINT_LABEL)
    if name is None:
        return None
    if name == "none":
        return False
    return labels.get(USE_WAYPOINT_NAMESPACE_LABEL, own_ns), name


def _chosen(lab: Lab, namespace: str, labels: dict[str, str]) -> tuple[tuple[str, str] | None, str]:
    """The waypoint an object's labels, then its namespace's, ask for; and where it was asked."""
    own = _use_waypoint(labels, namespace)
    if own is False:
        return None, "object"
    if own is not None:
        return own, "object"  # type: ignore[return-value]
    ns = lab.namespace(namespace)
    from_ns = _use_waypoint(ns.labels if ns else {}, namespace)
    return (from_ns or None), "namespace"  # type: ignore[return-value]


def _find(lab: Lab, wps: dict[tuple[str, str], Waypoint], want: tuple[str, str], obj: Any,
          where: str) -> Waypoint:
    if want in wps:
        return wps[want]
    ns_obj = lab.namespace(obj.namespace) if where == "namespace" else None
    target = ns_obj if ns_obj is not None else obj
    known = ", ".join(f"{n}/{w}" for n, w in wps) or "none"
    raise _error(target, _label_path(mesh.USE_WAYPOINT_LABEL),
                 f"{mesh.USE_WAYPOINT_LABEL} asks for waypoint {want[0]}/{want[1]}, and no Gateway "
                 f"of class {mesh.WAYPOINT_GATEWAY_CLASS} has that name (waypoints: {known})",
                 f"add the Gateway (`istioctl waypoint generate -n {want[0]} --name {want[1]}`), "
                 "fix the name, or remove the label")


def service_waypoint(lab: Lab, wps: list[Waypoint], svc: Service) -> Waypoint | None:
    """The waypoint a Service's traffic goes through (istiod's fetchWaypointForService)."""
    if mesh.GATEWAY_NAME_LABEL in svc.labels:
        return None  # a waypoint's own Service never gets a waypoint
    want, where = _chosen(lab, svc.namespace, svc.labels)
    if want is None:
        return None
    wp = _find(lab, {(w.namespace, w.name): w for w in wps}, want, svc, where)
    return wp if wp.serves("service") else None


def workload_waypoint(lab: Lab, wps: list[Waypoint], pod: Workload) -> Waypoint | None:
    """The waypoint for traffic addressed to the pod itself (fetchWaypointForWorkload)."""
    if pod.labels.get(mesh.GATEWAY_MANAGED_LABEL) == mesh.WAYPOINT_MANAGED_VALUE:
        return None
    want, where = _chosen(lab, pod.namespace, pod.labels)
    if want is None:
        return None
    dep = next((d for d in lab.deployments if (d.namespace, d.name) == (pod.namespace, pod.deployment)), None)
    wp = _find(lab, {(w.namespace, w.name): w for w in wps}, want, dep or pod, where)
    return wp if wp.serves("workload") else None


def attach(ctx: PlanContext) -> None:
    """Write each Service's and pod's waypoint (a FQDN, "" for none) into the state."""
    lab, state = ctx.lab, ctx.state
    wps = waypoints(lab, ctx.profile)
    models = {(s.namespace, s.name): s for s in lab.services}
    for i, svc in enumerate(state.services):
        wp = service_waypoint(lab, wps, models[(svc.namespace, svc.name)])
        if wp is not None:
            state.services[i] = dataclasses.replace(svc, waypoint=wp.fqdn(svc.domain))
    for i, pod in enumerate(state.pods):
        wp = workload_waypoint(lab, wps, pod)
        if wp is not None:
            state.pods[i] = dataclasses.replace(pod, waypoint=wp.fqdn())


# -- the mode -----------------------------------------------------------------------------

def enrollment(pod: Workload) -> str | None:
    if pod.labels.get(mesh.GATEWAY_MANAGED_LABEL) != mesh.WAYPOINT_MANAGED_VALUE:
        return None
    name = pod.labels.get(mesh.GATEWAY_NAME_LABEL)
    return f"the pod of waypoint Gateway {pod.namespace}/{name}" if name else None


class WaypointMode(MeshMode):
    name = NAME

    def enrolls(self, lab: Lab, pod: Workload) -> str | None:
        return enrollment(pod)

    def expand(self, lab: Lab, profile: IstioProfile) -> Lab:
        return expand(lab, profile)

    def plan_kernel(self, ctx: PlanContext, pods: list[Workload]) -> None:
        """No rules: a waypoint pod is not captured. What istiod adds is the attachment.

        One route per node's pod range in the fabric, so the lab CA (which listens on the
        fabric bridge) can answer a proxy that runs inside a pod: ztunnel asks from its
        node's address, a waypoint from its pod's (a real pod reaches istiod's Service).
        """
        attach(ctx)
        fabric = naming.fabric_netns(ctx.lab.name)
        have = {(r.netns, r.dst) for r in ctx.state.routes}
        for node in ctx.state.nodes:
            if (fabric, node.pod_cidr) not in have:
                ctx.state.routes.append(RouteSpec(fabric, node.pod_cidr, via=node.ip, dev=naming.FABRIC_BRIDGE))

    def plan_processes(self, ctx: PlanContext, pods: list[Workload]) -> None:
        statedir = naming.state_dir(ctx.lab.name)
        for pod in pods:
            workdir = f"{statedir}/waypoint/{pod.namespace}.{pod.name}"
            snap = waypoint_snapshot(ctx, pod, f"{statedir}/ca", workdir)
            ctx.state.processes.append(ProcessSpec(
                name=f"waypoint/{pod.namespace}/{pod.name}", netns=pod.netns,
                argv=(ctx.options.python, "-m", "netlab.dataplane.waypoint", "--config", "{config}"),
                signals_ready=True, config=snap.to_json(),
                # Istio's waypoint template annotates the pod prometheus.io/port 15020 and
                # prometheus.io/path /stats/prometheus (istio files/waypoint.yaml).
                scrape=ScrapeTarget(f"{pod.ip}:{mesh.METRICS_PORT}", pod.namespace, pod.name, pod.node,
                                    labels=tuple(sorted(pod.labels.items())), path="/stats/prometheus")))


def waypoint_snapshot(ctx: PlanContext, pod: Workload, ca_dir: str, workdir: str) -> ProxySnapshot:
    """What istiod pushes to one waypoint: every workload and Service (it checks which use
    it), the AuthorizationPolicies (it applies those whose targetRefs name its Services or
    itself) and the HTTPRoutes (those whose parentRefs name its Services)."""
    lab, state = ctx.lab, ctx.state
    me = next(s for s in state.services
              if (s.namespace, s.name) == (pod.namespace, pod.labels[mesh.GATEWAY_NAME_LABEL]))
    return ProxySnapshot(
        proxy="waypoint", node=pod.node, trust_domain=lab.trust_domain,
        capture=ctx.profile.ambient_capture, workdir=workdir,
        ca=CertAuthority(url=f"https://{CA_IP}:{mesh.CA_PORT}", dir=ca_dir, root_cert=f"{ca_dir}/root-cert.pem"),
        bootstrap=Bootstrap(cert=f"{workdir}/bootstrap-cert.pem", key=f"{workdir}/bootstrap-key.pem"),
        dns=DnsProxy(upstream=None), workloads=tuple(state.pods), services=tuple(state.services),
        policies=tuple(Policy(r.kind, r.namespace, r.name, r.spec, dict(r.labels))
                       for r in lab.kept("AuthorizationPolicy")),
        routes=tuple(HttpRoute(r.namespace, r.name, r.spec) for r in lab.kept("HTTPRoute")),
        waypoint=me.fqdn)
