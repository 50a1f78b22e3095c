"""Ambient mode: which pods are enrolled, and what istio-cni, istiod and ztunnel add.

Pure, like the rest of `netlab.plan`: it appends to a DesiredState and never touches
files. Real ambient splits this across istio-cni (in-pod rules, host-probe SNAT),
istiod (CA, xDS) and one ztunnel DaemonSet pod per node; the lab model stands in for
xDS, so the whole "control plane" is the config snapshot each ztunnel is started with.

DNS capture is on, as in Istio's default rules: the pod's DNS goes to ztunnel's DNS
proxy on 15053, which forwards what it does not answer to the pod's resolver (the
snapshot's `dns.upstream`).
"""

from __future__ import annotations

import json

from netlab import mesh
from netlab.model import Lab
from netlab.plan import cluster_dns, naming
from netlab.plan.istio_rules import (ambient_policy_routing, hostprobe_ipset,
                                     render_ambient_hostprobe, render_ambient_inpod)
from netlab.plan.modes.base import MeshMode, PlanContext
from netlab.plan.state import ProcessSpec, RulesetSpec, ScrapeTarget
from netlab.snapshot import (Bootstrap, CertAuthority, DnsProxy, Policy, ProxySnapshot,
                             Workload)

NAME = "ambient"
CA_IP = "172.18.0.1"  # the fabric bridge: every node reaches it on the fabric
POLICY_KINDS = ("AuthorizationPolicy", "PeerAuthentication")


def enrollment(lab: Lab, pod: Workload) -> str | None:
    """In the mesh: namespace or pod says ambient, unless the pod opts out with `none`."""
    label = mesh.DATAPLANE_MODE_LABEL
    mode = pod.labels.get(label)
    if mode == "none":
        return None
    if mode == NAME:
        return f"pod label {label}=ambient"
    ns = lab.namespace(pod.namespace)
    if ns and ns.labels.get(label) == NAME:
        return f"namespace {pod.namespace} has {label}=ambient"
    return None


def enrolled(lab: Lab, pod: Workload) -> bool:
    return enrollment(lab, pod) is not None


class AmbientMode(MeshMode):
    name = NAME

    def enrolls(self, lab: Lab, pod: Workload) -> str | None:
        return enrollment(lab, pod)

    def plan_kernel(self, ctx: PlanContext, pods: list[Workload]) -> None:
        state, profile = ctx.state, ctx.profile
        for pod in pods:
            bypass = pod.annotations.get(mesh.BYPASS_INBOUND_ANNOTATION) == "true"
            state.rulesets.append(RulesetSpec(
                pod.netns, render_ambient_inpod(profile.ambient_capture, bypass_inbound=bypass,
                                                dns_capture=True),
                owner="istio-ambient"))
            # fwmark 0x111/0xfff -> table 100 with `local 0.0.0.0/0 dev lo`, as istio-cni
            # installs it: replies to ztunnel's spoofed connections are delivered locally.
            rules, routes = ambient_policy_routing(pod.netns)
            state.ip_rules += rules
            state.routes += routes
        nodes = {n.name: n for n in state.nodes}
        for node_name, node_pods in _by_node(pods).items():
            netns = nodes[node_name].netns
            # The applier creates ipsets before rulesets, so the SNAT rule finds its set.
            state.ipsets.append(hostprobe_ipset(netns, [p.ip for p in node_pods]))
            state.rulesets.append(RulesetSpec(
                netns, render_ambient_hostprobe(jump_first=profile.hostprobe_jump_first),
                owner="istio-hostprobe"))

    def plan_processes(self, ctx: PlanContext, pods: list[Workload]) -> None:
        lab, state, python = ctx.lab, ctx.state, ctx.options.python
        statedir = naming.state_dir(lab.name)
        ca_dir = f"{statedir}/ca"
        fabric = naming.fabric_netns(lab.name)
        by_node = _by_node(pods)
        # Every meshed pod's identity (ambient, sidecar, ...): its node's proxies may ask for it.
        pods_by_node = {node: sorted({(p.namespace, p.service_account) for p in node_pods})
                        for node, node_pods in _by_node([p for p in state.pods if p.mode]).items()}
        state.processes.append(ProcessSpec(
            name="istiod-ca", netns=fabric,
            argv=(python, "-m", "netlab.dataplane.ca", "--dir", ca_dir,
                  "--listen", f"{CA_IP}:{mesh.CA_PORT}", "--pods-by-node", "{config}",
                  "--trust-domain", lab.trust_domain),
            signals_ready=True,
            config=json.dumps({n: [list(x) for x in v] for n, v in pods_by_node.items()},
                              indent=1)))
        nodes = {n.name: n for n in state.nodes}
        for node_name in by_node:
            node = nodes[node_name]
            snap = ztunnel_snapshot(ctx, node_name, ca_dir, f"{statedir}/ztunnel/{node_name}")
            # Ready once every pod's listeners and the node's metrics port are open.
            state.processes.append(ProcessSpec(
                name=f"ztunnel/{node_name}", netns=node.netns,
                argv=(python, "-m", "netlab.dataplane.ztunnel", "--config", "{config}"),
                signals_ready=True, config=snap.to_json(),
                # As the ztunnel DaemonSet pod: Prometheus' pod-label mapping gives app="ztunnel".
                scrape=ScrapeTarget(f"{node.ip}:{mesh.METRICS_PORT}", mesh.ROOT_NAMESPACE,
                                    f"ztunnel-{node_name}", node_name, labels=tuple(mesh.ZTUNNEL_POD_LABELS.items()))))


def ztunnel_snapshot(ctx: PlanContext, node: str, ca_dir: str, workdir: str) -> ProxySnapshot:
    """The xDS stand-in: everything one ztunnel needs to know about the lab."""
    lab, state, profile = ctx.lab, ctx.state, ctx.profile
    return ProxySnapshot(
        proxy="ztunnel", node=node, trust_domain=lab.trust_domain,
        capture=profile.ambient_capture, workdir=workdir,
        ca=CertAuthority(url=f"https://{CA_IP}:{mesh.CA_PORT}", dir=ca_dir,
                         root_cert=f"{ca_dir}/root-cert.pem"),
        bootstrap=Bootstrap(cert=f"{workdir}/bootstrap-cert.pem",
                            key=f"{workdir}/bootstrap-key.pem"),
        dns=DnsProxy(upstream=cluster_dns.upstream(state.dns_ip), domain=mesh.DNS_DOMAIN,
                     forward_in_pod=profile.dns_capture_exempts_proxy_mark),
        workloads=tuple(state.pods), services=tuple(state.services),
        policies=tuple(Policy(r.kind, r.namespace, r.name, r.spec, dict(r.labels))
                       for r in lab.resources if r.kind in POLICY_KINDS))


def _by_node(pods: list[Workload]) -> dict[str, list[Workload]]:
    out: dict[str, list[Workload]] = {}
    for pod in pods:
        out.setdefault(pod.node, []).append(pod)
    return out
