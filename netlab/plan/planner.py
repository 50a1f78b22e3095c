"""Model → desired kernel state. Pure: no I/O, so plans are unit-tested without root.

Network shape (documented in README "Design"):
- a fabric netns with a bridge joins the nodes (like kind's docker network);
- each node is a netns with `eth0` on the fabric and a route per other node's pod CIDR;
- each pod is a netns with `eth0` (a /32) on a veth to its node, default route via a
  link-local gateway (Calico's layout), so the node routes every pod packet and
  kube-proxy's rules in the node see all of it.
"""

from __future__ import annotations

import ipaddress
import json

from netlab import mesh
from netlab.errors import TopologyError
from netlab.model import (API_SERVER_OFFSET, CLUSTER_DNS_OFFSET, FABRIC_CIDR, RESERVED_SERVICE_OFFSETS, Lab,
                          Service)
from netlab.plan import naming, prometheus_app
from netlab.plan.cluster_dns import dns_records, resolv_conf
from netlab.plan.kubeproxy import render_kube_proxy
from netlab.plan.addons import plan_addons
from netlab.plan.modes import PlanContext, expand_model, plan_modes
from netlab.plan.options import PlanOptions
from netlab.plan.profile import profile
from netlab.plan.state import (AddressSpec, BridgeSpec, DesiredState, NeighSpec, NetnsSpec, NodeInfo,
                               ProcessSpec, ReadyCheck, RouteSpec, RulesetSpec, SysctlSpec, VethSpec)
from netlab.snapshot import Endpoint, ServicePort, Workload
from netlab.snapshot import Service as ServiceSnapshot
from netlab.topology.placement import Unschedulable, schedule

APP_IMAGES = {"netlab/http-echo": "http-echo", "netlab/tcp-echo": "tcp-echo",
              "netlab/reverse-proxy": "reverse-proxy"}
DEFAULT_APP_PORT = 8080

# Re-exported for callers that planned before options and resolv.conf had modules of their own.
__all__ = ["plan", "PlanOptions", "resolv_conf", "dns_records"]


def plan(lab: Lab, options: PlanOptions = PlanOptions()) -> DesiredState:
    state = DesiredState(lab=lab.name)
    lab = expand_model(lab, profile(lab.istio_version, lab.istio_profile))  # e.g. a waypoint's pod and Service
    _plan_fabric_and_nodes(lab, state)
    _plan_pods(lab, state)
    _plan_services(lab, state)
    _plan_dns(lab, state, options)
    if options.start_processes:
        _plan_apps(lab, state, options)
    # Ambient today; the sidecar and the waypoint register beside it.
    ctx = PlanContext(lab, state, options, profile(lab.istio_version, lab.istio_profile))
    plan_modes(ctx)
    plan_addons(ctx)  # after the modes: an addon reads what they planned (Prometheus: targets)
    return state


def _plan_fabric_and_nodes(lab: Lab, state: DesiredState) -> None:
    fabric = naming.fabric_netns(lab.name)
    state.netns.append(NetnsSpec(fabric, "fabric"))
    state.bridges.append(BridgeSpec(fabric, naming.FABRIC_BRIDGE))
    gateway = FABRIC_CIDR.network_address + 1
    state.addresses.append(AddressSpec(fabric, naming.FABRIC_BRIDGE, f"{gateway}/{FABRIC_CIDR.prefixlen}"))
    pod_subnets = _node_pod_subnets(lab)
    for i, node in enumerate(lab.nodes):
        ns = naming.node_netns(lab.name, node.name)
        ip = FABRIC_CIDR.network_address + 2 + i
        state.netns.append(NetnsSpec(ns, "node", node=node.name))
        state.veths.append(VethSpec(fabric, naming.fabric_port(i), ns, naming.NODE_IFNAME,
                                    master=naming.FABRIC_BRIDGE))
        state.addresses.append(AddressSpec(ns, naming.NODE_IFNAME, f"{ip}/{FABRIC_CIDR.prefixlen}"))
        state.nodes.append(NodeInfo(node.name, ns, str(ip), str(pod_subnets[i])))
        # A node forwards for its pods; rp_filter off because ztunnel spoofs client IPs.
        state.sysctls += [SysctlSpec(ns, "net.ipv4.ip_forward", "1"),
                          SysctlSpec(ns, "net.ipv4.conf.all.rp_filter", "0"),
                          SysctlSpec(ns, "net.ipv4.conf.default.rp_filter", "0")]
    for node in state.nodes:
        for other in state.nodes:
            if other is not node:
                state.routes.append(RouteSpec(node.netns, other.pod_cidr, via=other.ip,
                                              dev=naming.NODE_IFNAME))


def _node_pod_subnets(lab: Lab) -> list[ipaddress.IPv4Network]:
    cidr = ipaddress.ip_network(lab.pod_cidr)
    new_prefix = 24 if cidr.prefixlen <= 24 - max(1, (len(lab.nodes) - 1).bit_length()) else None
    if new_prefix is None:
        raise TopologyError(lab.files[0] if lab.files else "<lab>", None, "spec.network.podCIDR",
                            f"{lab.pod_cidr} is too small to give each of {len(lab.nodes)} nodes a /24",
                            "use a larger podCIDR, such as 10.244.0.0/16")
    return list(cidr.subnets(new_prefix=new_prefix))[: len(lab.nodes)]


def _placements(lab: Lab) -> list[list[str]]:
    """The scheduler stand-in (topology/placement.py), the one the loader checked with.

    A model built in code (not loaded) may still ask for the impossible: said here."""
    try:
        return schedule(lab.nodes, lab.deployments)
    except Unschedulable as e:
        dep = e.deployment
        where = "spec.template.spec" if dep.kind != "Pod" else "spec"
        raise TopologyError(dep.source.file if dep.source else "<lab>", dep.source.document if dep.source else None,
                            where, f"replica {e.replica} of {dep.kind} {dep.namespace}/{dep.name} fits no node: "
                            f"{e.reason}", "relax the placement rules or add nodes") from None


def _plan_pods(lab: Lab, state: DesiredState) -> None:
    nodes = {n.name: n for n in state.nodes}
    next_host = {n.name: 2 for n in state.nodes}  # .0 network, .1 left for the node
    veth_index = {n.name: 0 for n in state.nodes}
    for dep, placed in zip(lab.deployments, _placements(lab)):
        for i, node_name in enumerate(placed):
            node = nodes[node_name]
            subnet = ipaddress.ip_network(node.pod_cidr)
            if next_host[node_name] >= subnet.num_addresses - 1:
                raise TopologyError(dep.source.file if dep.source else "<lab>",
                                    dep.source.document if dep.source else None, "spec.replicas",
                                    f"node {node_name} has no pod addresses left in {subnet}",
                                    "spread the pods over more nodes or use fewer replicas")
            ip = str(subnet.network_address + next_host[node_name])
            next_host[node_name] += 1
            name = dep.pod_name(i)
            ns = naming.pod_netns(lab.name, dep.namespace, name)
            host_veth = naming.pod_host_veth(veth_index[node_name])
            veth_index[node_name] += 1
            state.netns.append(NetnsSpec(ns, "pod", node=node_name, pod=f"{dep.namespace}/{name}"))
            state.veths.append(VethSpec(node.netns, host_veth, ns, naming.POD_IFNAME,
                                        mac=naming.GATEWAY_MAC))
            state.addresses.append(AddressSpec(ns, naming.POD_IFNAME, f"{ip}/32"))
            state.neighbours.append(NeighSpec(ns, naming.POD_IFNAME, naming.GATEWAY_IP, naming.GATEWAY_MAC))
            state.routes.append(RouteSpec(ns, "default", via=naming.GATEWAY_IP, dev=naming.POD_IFNAME,
                                          onlink=True))
            state.routes.append(RouteSpec(node.netns, f"{ip}/32", dev=host_veth))
            state.pods.append(Workload(
                namespace=dep.namespace, name=name, deployment=dep.name, node=node_name, ip=ip,
                netns=ns, labels=dict(dep.labels), annotations=dict(dep.annotations),
                service_account=dep.service_account, host_veth=host_veth,
                images=tuple(c.image for c in dep.containers),
                tunnel=dep.labels.get(mesh.TUNNEL_LABEL) == "http"))


def _selected(svc: Service, pods: list[Workload]) -> list[Workload]:
    return [p for p in pods if p.namespace == svc.namespace and svc.selector
            and all(p.labels.get(k) == v for k, v in svc.selector.items())]


def _target_port(lab: Lab, pod: Workload, target: int | str) -> int | None:
    if isinstance(target, int):
        return target
    dep = next(d for d in lab.deployments if d.namespace == pod.namespace and d.name == pod.deployment)
    for c in dep.containers:
        for p in c.ports:
            if p.name == target:
                return p.container_port
    return None


def _plan_services(lab: Lab, state: DesiredState) -> None:
    cidr = ipaddress.ip_network(lab.service_cidr)
    dns_ip = str(cidr.network_address + CLUSTER_DNS_OFFSET)
    state.dns_ip = dns_ip
    taken = {str(cidr.network_address + off) for off in RESERVED_SERVICE_OFFSETS}
    taken |= {s.cluster_ip for s in lab.services if s.cluster_ip}
    # In order after the reserved addresses, so a lab's VIPs are the same at every up.
    first = max(API_SERVER_OFFSET, CLUSTER_DNS_OFFSET) + 1
    candidates = (str(cidr.network_address + i) for i in range(first, cidr.num_addresses - 1))
    for svc in lab.services:
        vip = svc.cluster_ip
        if not vip:
            vip = next((c for c in candidates if c not in taken), None)
            if vip is None:  # the loader refuses this; a Lab built in code may still get here
                raise TopologyError(svc.source.file if svc.source else "<lab>",
                                    svc.source.document if svc.source else None, "metadata.name",
                                    f"serviceCIDR {cidr} has no address left for Service {svc.namespace}/{svc.name}",
                                    "use a larger serviceCIDR, such as 10.96.0.0/16")
            taken.add(vip)
        pods = _selected(svc, state.pods)
        ports = []
        for sp in svc.ports:
            eps = []
            for p in pods:
                tp = _target_port(lab, p, sp.target_port)
                if tp is not None:
                    eps.append(Endpoint(p.key, p.ip, tp))
            ports.append(ServicePort(port=sp.port, name=sp.name, protocol=sp.protocol,
                                     app_protocol=sp.app_protocol, endpoints=tuple(eps)))
        state.services.append(ServiceSnapshot(svc.namespace, svc.name, vip, tuple(ports)))
    rules = render_kube_proxy(state.services)
    for node in state.nodes:
        state.rulesets.append(RulesetSpec(node.netns, rules, owner="kube-proxy"))


def _plan_dns(lab: Lab, state: DesiredState, options: PlanOptions) -> None:
    """A kube-dns stand-in: one process, serving the DNS address on every node's `lo`."""
    for node in state.nodes:
        state.addresses.append(AddressSpec(node.netns, "lo", f"{state.dns_ip}/32"))
    if not options.start_processes:
        return

    config = json.dumps({"listen": state.dns_ip, "netns": [n.netns for n in state.nodes],
                         "records": dns_records(state.services), "ttl": 5}, indent=1)
    state.processes.append(ProcessSpec(
        name="dns", netns=naming.fabric_netns(lab.name),
        argv=(options.python, "-m", "netlab.dataplane.dns", "--config", "{config}"),
        signals_ready=True,  # once it listens in every node netns
        config=config))


def _plan_apps(lab: Lab, state: DesiredState, options: PlanOptions) -> None:
    deps = {(d.namespace, d.name): d for d in lab.deployments}
    for pod in state.pods:
        dep = deps[(pod.namespace, pod.deployment)]
        resolv = resolv_conf(pod.namespace, state.dns_ip)
        for c in dep.containers:
            ports = [p.container_port for p in c.ports if p.protocol == "TCP"]
            own = not c.command and c.image in APP_IMAGES  # a built-in image says when it is ready
            if not c.command and c.image == prometheus_app.IMAGE:  # Debian's Prometheus, launched
                state.processes.append(ProcessSpec(
                    name=f"app/{pod.namespace}/{pod.name}/{c.name}", netns=pod.netns,
                    argv=prometheus_app.argv(options.python, lab.name, pod.namespace, pod.name,
                                             c.name, ports, c.args),
                    ready=(ReadyCheck(pod.netns, prometheus_app.port(ports)),), signals_ready=True,
                    resolv_conf=resolv, env=tuple(c.env.items()), config=prometheus_app.config()))
                continue
            if c.command:
                argv = tuple(c.command + c.args)
            elif own:
                ports = ports or [DEFAULT_APP_PORT]
                argv = (options.python, "-m", "netlab.dataplane.apps", APP_IMAGES[c.image])
                for p in ports:
                    argv += ("--port", str(p))
                if c.image == "netlab/http-echo":
                    argv += ("--name", pod.name)
                argv += tuple(c.args)
            else:
                continue  # netlab/sleep: an idle pod needs no process
            state.processes.append(ProcessSpec(
                name=f"app/{pod.namespace}/{pod.name}/{c.name}", netns=pod.netns, argv=argv,
                # A declared containerPort is a promise to listen: `up` waits for a user's
                # command to listen on it; a built-in image says ready once it listens.
                ready=() if own else tuple(ReadyCheck(pod.netns, p) for p in ports),
                signals_ready=own, resolv_conf=resolv, env=tuple(c.env.items())))
