"""Ambient mode: which pods are enrolled, and what istio-cni, istiod and ztunnel add.

Pure, like the rest of `netlab.plan`: it appends to a DesiredState and never touches
files. Real ambient splits this across istio-cni (in-pod rules, host-probe SNAT),
istiod (CA, xDS) and one ztunnel DaemonSet pod per node; the lab model stands in for
xDS, so the whole "control plane" is the JSON config each ztunnel is started with.

DNS capture is on, as in Istio's default rules: the pod's DNS goes to ztunnel's DNS
proxy on 15053, which forwards what it does not answer to the pod's resolver (the
`dns.upstream` of the ztunnel config).
"""

from __future__ import annotations

import json
from typing import Any

from netlab.model import AMBIENT_LABEL, BYPASS_INBOUND_ANNOTATION, Lab
from netlab.plan import naming
from netlab.plan.planner import DNS_DOMAIN
from netlab.plan.istio_rules import (ambient_policy_routing, hostprobe_ipset,
                                     render_ambient_hostprobe, render_ambient_inpod)
from netlab.plan.state import DesiredState, PodInfo, ProcessSpec, ReadyCheck, RulesetSpec

CA_PORT = 15012  # istiod's CA port
CA_IP = "172.18.0.1"  # the fabric bridge: every node reaches it on the fabric
ZTUNNEL_PORTS = (15001, 15006, 15008)
METRICS_PORT = 15020
READINESS_PORT = 15021
TUNNEL_LABEL = "networking.istio.io/tunnel"
POLICY_KINDS = ("AuthorizationPolicy", "PeerAuthentication")


def enrolled(lab: Lab, pod: PodInfo) -> bool:
    """In the mesh: namespace or pod says ambient, unless the pod opts out with `none`."""
    mode = pod.labels.get(AMBIENT_LABEL)
    if mode == "none":
        return False
    if mode == "ambient":
        return True
    ns = lab.namespace(pod.namespace)
    return bool(ns and ns.labels.get(AMBIENT_LABEL) == "ambient")


def hbone_sidecar(pod: PodInfo) -> bool:
    """A sidecar pod that announces it accepts HBONE itself (ztunnel tunnels to it)."""
    return pod.labels.get(TUNNEL_LABEL) == "http"


def plan_ambient(lab: Lab, state: DesiredState, options: Any) -> None:
    """Add ambient's rules and processes for every enrolled pod; nothing if none is."""
    pods = [p for p in state.pods if enrolled(lab, p)]
    if not pods:
        return
    for pod in pods:
        bypass = pod.annotations.get(BYPASS_INBOUND_ANNOTATION) == "true"
        state.rulesets.append(RulesetSpec(
            pod.netns, render_ambient_inpod(lab.istio_version, bypass_inbound=bypass, dns_capture=True),
            owner="istio-ambient"))
        # fwmark 0x111/0xfff -> table 100 with `local 0.0.0.0/0 dev lo`, as istio-cni
        # installs it: replies to ztunnel's spoofed connections are delivered locally.
        rules, routes = ambient_policy_routing(pod.netns)
        state.ip_rules += rules
        state.routes += routes
    nodes = {n.name: n for n in state.nodes}
    by_node: dict[str, list[PodInfo]] = {}
    for pod in pods:
        by_node.setdefault(pod.node, []).append(pod)
    for node_name, node_pods in by_node.items():
        netns = nodes[node_name].netns
        # The applier creates ipsets before rulesets, so the SNAT rule finds its set.
        state.ipsets.append(hostprobe_ipset(netns, [p.ip for p in node_pods]))
        state.rulesets.append(RulesetSpec(netns, render_ambient_hostprobe(lab.istio_version),
                                          owner="istio-hostprobe"))
    if getattr(options, "start_processes", True):
        _plan_processes(lab, state, options, by_node)


def _plan_processes(lab: Lab, state: DesiredState, options: Any,
                    by_node: dict[str, list[PodInfo]]) -> None:
    python = getattr(options, "python", "python3")
    statedir = naming.state_dir(lab.name)
    ca_dir = f"{statedir}/ca"
    fabric = naming.fabric_netns(lab.name)
    pods_by_node = {node: sorted({(p.namespace, p.service_account) for p in pods})
                    for node, pods in by_node.items()}
    state.processes.append(ProcessSpec(
        name="istiod-ca", netns=fabric,
        argv=(python, "-m", "netlab.dataplane.ca", "--dir", ca_dir,
              "--listen", f"{CA_IP}:{CA_PORT}", "--pods-by-node", "{config}",
              "--trust-domain", lab.trust_domain),
        ready=(ReadyCheck(fabric, CA_PORT),),
        config=json.dumps({n: [list(x) for x in v] for n, v in pods_by_node.items()}, indent=1)))
    nodes = {n.name: n for n in state.nodes}
    for node_name, pods in by_node.items():
        node = nodes[node_name]
        config = ztunnel_config(lab, state, node_name, ca_dir, f"{statedir}/ztunnel/{node_name}")
        ready = (ReadyCheck(node.netns, METRICS_PORT),) + tuple(
            ReadyCheck(p.netns, 15008) for p in pods)
        state.processes.append(ProcessSpec(
            name=f"ztunnel/{node_name}", netns=node.netns,
            argv=(python, "-m", "netlab.dataplane.ztunnel", "--config", "{config}"),
            ready=ready, config=json.dumps(config, indent=1)))


def ztunnel_config(lab: Lab, state: DesiredState, node: str, ca_dir: str, workdir: str) -> dict[str, Any]:
    """The xDS stand-in: everything one ztunnel needs to know about the lab."""
    return {
        "node": node,
        "trust_domain": lab.trust_domain,
        "istio_version": lab.istio_version,
        "ca": {"url": f"https://{CA_IP}:{CA_PORT}", "dir": ca_dir,
               "root_cert": f"{ca_dir}/root-cert.pem"},
        "workdir": workdir,
        "bootstrap": {"cert": f"{workdir}/bootstrap-cert.pem", "key": f"{workdir}/bootstrap-key.pem"},
        "workloads": [{
            "name": p.name, "namespace": p.namespace, "deployment": p.deployment,
            "service_account": p.service_account, "ip": p.ip, "node": p.node, "netns": p.netns,
            "labels": dict(p.labels), "in_mesh": enrolled(lab, p), "hbone": hbone_sidecar(p),
        } for p in state.pods],
        "services": [{
            "namespace": s.namespace, "name": s.name, "vip": s.vip,
            "ports": [{"name": sp.name, "port": sp.port, "protocol": sp.protocol,
                       "endpoints": [{"pod": e.pod, "ip": e.ip, "port": e.port} for e in sp.endpoints]}
                      for sp in s.ports],
        } for s in state.services],
        "dns": {"upstream": f"{state.dns_ip}:53", "domain": DNS_DOMAIN},
        "policies": [{"kind": r.kind, "namespace": r.namespace, "name": r.name, "spec": r.spec,
                      "labels": dict(r.labels)} for r in lab.resources if r.kind in POLICY_KINDS],
    }
