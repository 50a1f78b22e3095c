"""Sidecar mode: which pods Istio's injector mutates, and what the injected pod gets.

The real path is a mutating webhook (the pod gets istio-init/istio-proxy containers and
labels), the istio-iptables rules in its netns, and an Envoy fed by istiod. Here the
webhook is `inject` (labels only: a lab pod has no container list to patch), the rules
are `render_sidecar` (equal to Istio's golden files), and istiod's xDS is one
`xds.SidecarSnapshot` per pod, built by `netlab.plan.sidecar_xds`.

Registered before ambient: a pod with a sidecar is left alone by istio-cni's ambient
capture, even in an ambient namespace.
"""

from __future__ import annotations

import dataclasses
import json

from netlab import mesh
from netlab.model import Lab
from netlab.plan import naming
from netlab.plan.istio_rules import SIDECAR_EXCLUDE_INBOUND, SIDECAR_PROXY_STATUS_PORT, render_sidecar
from netlab.plan.modes.ambient import CA_IP  # the lab CA's address (ambient plans it too)
from netlab.plan.modes.base import MeshMode, PlanContext
from netlab.plan.sidecar_xds import MeshView, build
from netlab.plan.state import IpRuleSpec, ProcessSpec, RouteSpec, RulesetSpec, ScrapeTarget
from netlab.snapshot import Bootstrap, CertAuthority, Policy, Workload
from netlab.xds import AccessLog, SidecarSnapshot

NAME = "sidecar"
POLICY_KINDS = ("AuthorizationPolicy", "PeerAuthentication")
TLS_MODE_ISTIO = "istio"


def injection(lab: Lab, pod: Workload) -> str | None:
    """Why the injector mutates `pod`, following its webhook selectors (istio@1.24.0
    `manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml`):
    a namespace `istio-injection=enabled` injects every pod not labelled
    `sidecar.istio.io/inject: "false"`; a namespace without the label injects only pods
    labelled `"true"`; `istio-injection=disabled` excludes the namespace outright."""
    ns = lab.namespace(pod.namespace)
    ns_label = ns.labels.get(mesh.INJECTION_LABEL) if ns else None
    pod_label = pod.labels.get(mesh.SIDECAR_INJECT)
    if pod_label == "false" or (ns_label is not None and ns_label != "enabled"):
        return None
    if ns_label == "enabled":
        return f"namespace {pod.namespace} has {mesh.INJECTION_LABEL}=enabled"
    if pod_label == "true":
        return f'pod label {mesh.SIDECAR_INJECT}="true"'
    return None


def capture_mode(pod: Workload) -> str:
    """"redirect" or "tproxy", from sidecar.istio.io/interceptionMode (checked by topology)."""
    return "tproxy" if pod.annotations.get(mesh.INTERCEPTION_MODE_ANNOTATION) == "TPROXY" \
        else "redirect"


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def sidecar_rules(pod: Workload) -> str:
    """istio-iptables for this pod, with the traffic annotations the injector passes on
    (`-d`, `-o`, `-i`, `-x`). The status ports stay excluded inbound, as istio-cni adds them."""
    ann = pod.annotations
    include = ann.get(mesh.INCLUDE_OUTBOUND_RANGES_ANNOTATION, "*").strip()
    return render_sidecar(
        "TPROXY" if capture_mode(pod) == "tproxy" else "REDIRECT",
        exclude_inbound=tuple(SIDECAR_EXCLUDE_INBOUND)
        + tuple(_list(ann.get(mesh.EXCLUDE_INBOUND_PORTS_ANNOTATION))),
        exclude_outbound_ports=(SIDECAR_PROXY_STATUS_PORT,)
        + tuple(p for p in _list(ann.get(mesh.EXCLUDE_OUTBOUND_PORTS_ANNOTATION))
                if p != SIDECAR_PROXY_STATUS_PORT),
        outbound_ranges_include="*" if include == "*" else ",".join(_list(include)),
        outbound_ranges_exclude=tuple(_list(ann.get(mesh.EXCLUDE_OUTBOUND_RANGES_ANNOTATION))))


def tproxy_policy_routing(netns: str) -> tuple[IpRuleSpec, RouteSpec]:
    """`ip rule add fwmark 1337 lookup 133` and `ip route add local default dev lo table 133`,
    which istio-iptables adds in TPROXY mode (tools/istio-iptables/pkg/capture/run_linux.go)."""
    return (IpRuleSpec(netns=netns, fwmark=mesh.PROXY_MARK, mask=0xFFFFFFFF,
                       table=mesh.SIDECAR_TPROXY_ROUTE_TABLE,
                       priority=mesh.SIDECAR_TPROXY_RULE_PRIORITY),
            RouteSpec(netns=netns, dst="0.0.0.0/0", dev="lo", table=mesh.SIDECAR_TPROXY_ROUTE_TABLE,
                      type="local"))


class SidecarMode(MeshMode):
    name = NAME

    def enrolls(self, lab: Lab, pod: Workload) -> str | None:
        return injection(lab, pod)

    def inject(self, ctx: PlanContext, pod: Workload) -> Workload:
        """The labels the injection template adds: tlsMode istio always, and the tunnel
        label when the ambient profile set ISTIO_META_ENABLE_HBONE (mesh-facts-2 §A4)."""
        labels = {**pod.labels, mesh.TLS_MODE_LABEL: TLS_MODE_ISTIO}
        tunnel = ctx.profile.sidecar_hbone
        if tunnel:
            labels[mesh.TUNNEL_LABEL] = "http"
        return dataclasses.replace(pod, labels=labels, tunnel=tunnel or pod.tunnel)

    def plan_kernel(self, ctx: PlanContext, pods: list[Workload]) -> None:
        """The capture rules per pod, and a route per node's pod range in the fabric so the
        lab CA (on the fabric bridge) can answer a sidecar asking from its pod's address,
        as a real pod reaches istiod's Service (the waypoint mode adds the same routes)."""
        fabric = naming.fabric_netns(ctx.lab.name)
        have = {(r.netns, r.dst) for r in ctx.state.routes}
        for node in ctx.state.nodes:
            if (fabric, node.pod_cidr) not in have:
                ctx.state.routes.append(RouteSpec(fabric, node.pod_cidr, via=node.ip,
                                                  dev=naming.FABRIC_BRIDGE))
        for pod in pods:
            # One iptables-restore per pod: the rules land atomically, as istio-cni applies them.
            ctx.state.rulesets.append(RulesetSpec(pod.netns, sidecar_rules(pod), owner="istio-sidecar"))
            if capture_mode(pod) == "tproxy":
                rule, route = tproxy_policy_routing(pod.netns)
                ctx.state.ip_rules.append(rule)
                ctx.state.routes.append(route)

    def plan_processes(self, ctx: PlanContext, pods: list[Workload]) -> None:
        lab, state = ctx.lab, ctx.state
        statedir = naming.state_dir(lab.name)
        ca_dir = f"{statedir}/ca"
        if not any(p.mode == "ambient" for p in state.pods):
            # Ambient mode plans the CA when it has pods; without them the sidecars need it.
            state.processes.append(ca_process(ctx, ca_dir))
        for pod in pods:
            snap = sidecar_snapshot(ctx, pod, ca_dir, f"{statedir}/sidecar/{pod.namespace}/{pod.name}")
            state.processes.append(ProcessSpec(
                name=process_name(pod), netns=pod.netns,
                argv=(ctx.options.python, "-m", "netlab.dataplane.sidecar", "--config", "{config}"),
                # Started as root, as the kubelet hands a pod its token: the proxy mints its
                # pod-bound bootstrap from the lab CA's directory, then drops to istio-proxy's
                # ids itself (uid/gid 1337; uid 0 + gid 1337 for TPROXY, as the injection
                # template runs it) before it opens a socket, so the capture's owner match holds.
                signals_ready=True, config=snap.to_json(),
                # The injector's Prometheus merge annotates the pod prometheus.io/port 15020,
                # prometheus.io/path /stats/prometheus (istio pkg/kube/inject, enablePrometheusMerge).
                scrape=ScrapeTarget(f"{pod.ip}:{mesh.METRICS_PORT}", pod.namespace, pod.name, pod.node,
                                    labels=tuple(sorted(pod.labels.items())), path="/stats/prometheus")))


def process_name(pod: Workload) -> str:
    """The lab's name for a pod's sidecar process (and the key `netlab proxy-config` reads)."""
    return sidecar_process(pod.namespace, pod.name)


def sidecar_process(namespace: str, name: str) -> str:
    return f"{NAME}/{namespace}/{name}"


def meshed_identities_by_node(pods: list[Workload]) -> dict[str, list[list[str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    for p in pods:
        if p.mode:
            out.setdefault(p.node, set()).add((p.namespace, p.service_account))
    return {node: [list(x) for x in sorted(ids)] for node, ids in sorted(out.items())}


def ca_process(ctx: PlanContext, ca_dir: str) -> ProcessSpec:
    """The lab CA, authorising each node's proxies for the identities of its meshed pods."""
    lab = ctx.lab
    return ProcessSpec(
        name="istiod-ca", netns=naming.fabric_netns(lab.name),
        argv=(ctx.options.python, "-m", "netlab.dataplane.ca", "--dir", ca_dir,
              "--listen", f"{CA_IP}:{mesh.CA_PORT}", "--pods-by-node", "{config}",
              "--trust-domain", lab.trust_domain),
        signals_ready=True,
        config=json.dumps(meshed_identities_by_node(ctx.state.pods), indent=1))


def sidecar_snapshot(ctx: PlanContext, pod: Workload, ca_dir: str, workdir: str) -> SidecarSnapshot:
    """istiod's push to the sidecar of `pod`, with its credentials' whereabouts."""
    lab, state, profile = ctx.lab, ctx.state, ctx.profile
    policies = tuple(Policy(r.kind, r.namespace, r.name, r.spec, dict(r.labels))
                     for r in lab.resources if r.kind in POLICY_KINDS)
    view = MeshView(trust_domain=lab.trust_domain, pods=tuple(state.pods),
                    services=tuple(state.services), policies=policies,
                    send_hbone=profile.send_hbone, prefer_hbone=profile.prefer_hbone)
    capture = capture_mode(pod)
    xds = build(view, pod, capture, hbone_listen=pod.tunnel and profile.sidecar_hbone)
    return SidecarSnapshot(
        workload=pod, node=pod.node, trust_domain=lab.trust_domain, capture=capture,  # type: ignore[arg-type]
        workdir=workdir,
        ca=CertAuthority(url=f"https://{CA_IP}:{mesh.CA_PORT}", dir=ca_dir,
                         root_cert=f"{ca_dir}/root-cert.pem"),
        bootstrap=Bootstrap(cert=f"{workdir}/bootstrap-cert.pem", key=f"{workdir}/bootstrap-key.pem"),
        istio_version=profile.version, hbone=pod.tunnel and profile.sidecar_hbone,
        metadata_discovery=profile.sidecar_metadata_discovery, access_log=AccessLog(),
        workloads=tuple(state.pods), services=tuple(state.services),
        listeners=xds.listeners, route_configs=xds.route_configs, clusters=xds.clusters)
