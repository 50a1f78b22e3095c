"""istiod's stand-in for one sidecar: the mesh model → listeners, route configs, clusters.

Pure, like the rest of `netlab.plan`. Each rule below is what istiod 1.24 generates for a
sidecar proxy with no Sidecar resource, VirtualService or DestinationRule; docs/sidecar.md
names the source file of each and the places netlab simplifies. The shapes are
`netlab.xds`; the proxy (`netlab.dataplane.sidecar`) serves from them.

Outbound (istio@1.24.0 `networking/core/listener.go`, `httproute.go`):
- explicit HTTP ports share `0.0.0.0_<port>` (HTTP chain on raw_buffer + http/1.1,h2c,
  RDS `"<port>"`; default chain → PassthroughCluster);
- auto-detected ports get `<vip>_<port>` (HTTP chain → RDS `<fqdn>:<port>`, default chain
  tcp_proxy → the service's cluster); TCP ports `<vip>_<port>` with one tcp_proxy chain.
Inbound (`listener_inbound.go`, `filterchain_options.go`): chains per target port and
PeerAuthentication mode on `virtualInbound`, passthrough chains for other ports, and with
HBONE the `connect_terminate` listener in front of the internal `main_internal`.
Endpoints (`xds/endpoints/endpoint_builder.go`): Istio mTLS to pods labelled
`security.istio.io/tlsMode: istio`, HBONE to pods that support tunnels but have no
sidecar mTLS (ambient pods), plaintext to the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from netlab import mesh
from netlab.snapshot import Policy, Service, ServicePort, Workload
from netlab.xds import (ALLOW_ANY, BLACKHOLE_CLUSTER, CLIENT_H2_ALPNS, CLIENT_TCP_ALPNS,
                        CONNECT_ORIGINATE, CONNECT_TERMINATE, DEFAULT_ROUTE, HBONE_ALPNS,
                        INBOUND_PASSTHROUGH_BIND, INBOUND_PASSTHROUGH_CLUSTER, MAIN_INTERNAL,
                        MTLS_ALPNS, MTLS_HTTP_ALPNS, PASSTHROUGH_CLUSTER, PLAINTEXT_HTTP_ALPNS,
                        RAW_BUFFER, SERVER_HTTP_ALPNS, SERVER_TCP_ALPNS, TLS, VIRTUAL_INBOUND,
                        VIRTUAL_OUTBOUND, Cluster, DownstreamTls, FilterChain, FilterChainMatch,
                        HttpConnectionManager, LbEndpoint, Listener, Protocol, RetryPolicy, Route,
                        RouteConfiguration, ServiceRef, TcpProxy, Transport, UpstreamTls,
                        VirtualHost, inbound_cluster_name, outbound_cluster_name, outbound_sni,
                        port_listener_name, vhost_name, vip_listener_name)

WILDCARD = "0.0.0.0"
MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]

# Service port protocols by name prefix or appProtocol (istio `pkg/config/protocol`,
# `pilot/pkg/serviceregistry/kube/conversion.go`), folded to what the listener does.
_HTTP = ("http", "http_proxy")
_HTTP2 = ("http2", "grpc", "grpc-web", "kubernetes.io/h2c")
_TCP = ("tcp", "https", "tls", "mongo", "mysql", "redis")
_WS = ("kubernetes.io/ws", "kubernetes.io/wss")


@dataclass(frozen=True)
class MeshView:
    """What istiod knows when it builds one sidecar's config."""

    trust_domain: str
    pods: tuple[Workload, ...]  # every pod, with the mesh mode that enrolled it
    services: tuple[Service, ...]
    policies: tuple[Policy, ...] = ()
    send_hbone: bool = True  # PILOT_ENABLE_SENDING_HBONE: on with the ambient profile
    prefer_hbone: bool = False  # PILOT_PREFER_SENDING_HBONE: off by default (§A4)
    root_namespace: str = mesh.ROOT_NAMESPACE

    def pod(self, key: str) -> Workload | None:
        return next((p for p in self.pods if p.key == key), None)


@dataclass(frozen=True)
class SidecarXds:
    listeners: tuple[Listener, ...]
    route_configs: tuple[RouteConfiguration, ...]
    clusters: tuple[Cluster, ...]


def port_protocol(sp: ServicePort) -> Protocol | None:
    """HTTP, HTTP2, TCP or AUTO (sniffed); None for UDP/SCTP, which a sidecar skips."""
    if sp.protocol.upper() != "TCP":
        return None
    if sp.app_protocol:
        word = sp.app_protocol.lower()
    else:
        word = (sp.name or "").lower().split("-", 1)[0]
        if (sp.name or "").lower().startswith("grpc-web"):
            word = "grpc-web"
    if word in _HTTP or word in _WS:
        return "HTTP"
    if word in _HTTP2:
        return "HTTP2"
    if word in _TCP:
        return "TCP"
    return "AUTO"


def _is_http(p: Protocol) -> bool:
    return p in ("HTTP", "HTTP2")


# -- PeerAuthentication, as istiod resolves it for a sidecar ------------------------------


def _selects(spec: dict[str, Any], labels: dict[str, str]) -> bool:
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def _mode_of(spec: dict[str, Any]) -> str:
    return str((spec.get("mtls") or {}).get("mode") or "UNSET").upper()


def mtls_mode(view: MeshView, pod: Workload, port: int | None) -> MtlsMode:
    """Mesh → namespace → workload; UNSET inherits; the workload's portLevelMtls wins for
    its (target) port. Default PERMISSIVE. Unlike ambient, DISABLE is honoured."""
    pas = [p for p in view.policies if p.kind == "PeerAuthentication"]

    def first(pred: Any) -> Policy | None:
        return next((p for p in pas if pred(p)), None)

    chain = [first(lambda p: p.namespace == view.root_namespace
                   and not (p.spec.get("selector") or {}).get("matchLabels"))]
    if pod.namespace != view.root_namespace:
        chain.append(first(lambda p: p.namespace == pod.namespace
                           and not (p.spec.get("selector") or {}).get("matchLabels")))
    chain.append(first(lambda p: p.namespace == pod.namespace and _selects(p.spec, pod.labels)))
    mode: MtlsMode = "PERMISSIVE"
    for i, pa in enumerate(chain):
        if pa is None:
            continue
        raw = _mode_of(pa.spec)
        if i == len(chain) - 1 and port is not None:
            levels = pa.spec.get("portLevelMtls") or {}
            entry = levels.get(port, levels.get(str(port)))
            if entry is not None and _mode_of({"mtls": entry}) != "UNSET":
                raw = _mode_of({"mtls": entry})
        if raw in ("STRICT", "PERMISSIVE", "DISABLE"):
            mode = raw  # type: ignore[assignment]
    return mode


def _port_level_ports(view: MeshView, pod: Workload) -> list[int]:
    """Ports named in the pod's workload PeerAuthentication portLevelMtls."""
    pa = next((p for p in view.policies if p.kind == "PeerAuthentication"
               and p.namespace == pod.namespace and _selects(p.spec, pod.labels)), None)
    levels = (pa.spec.get("portLevelMtls") or {}) if pa else {}
    return sorted(int(k) for k in levels)


# -- names and domains ----------------------------------------------------------------------


def vhost_domains(svc: Service, client_namespace: str) -> tuple[str, ...]:
    """§D1/§G1: FQDN, short forms by namespace, ClusterIP; no `:port` variants (1.16+)."""
    short = f"{svc.name}.{svc.namespace}"
    if svc.namespace == client_namespace:
        alt = [svc.name, f"{short}.svc", short]
    else:
        alt = [short, f"{short}.svc"]
    return (svc.fqdn, *alt, svc.vip)


def default_route(cluster: str) -> Route:
    return Route(name=DEFAULT_ROUTE, cluster=cluster, retry_policy=RetryPolicy())


def allow_any_vhost() -> VirtualHost:
    """The catch-all of a port's route config: no retries, no timeout (buildCatchAllVirtualHost)."""
    return VirtualHost(ALLOW_ANY, ("*",), (Route(name=ALLOW_ANY, cluster=PASSTHROUGH_CLUSTER),))


# -- outbound ------------------------------------------------------------------------------


def _outbound_ports(view: MeshView) -> list[tuple[Service, ServicePort, Protocol]]:
    out = []
    for svc in view.services:
        for sp in svc.ports:
            proto = port_protocol(sp)
            if proto is not None:
                out.append((svc, sp, proto))
    return out


def outbound_route_configs(view: MeshView, pod: Workload) -> list[RouteConfiguration]:
    by_port: dict[int, list[VirtualHost]] = {}
    sniffed: list[RouteConfiguration] = []
    for svc, sp, proto in _outbound_ports(view):
        cluster = outbound_cluster_name(sp.port, svc.fqdn)
        name = vhost_name(svc.fqdn, sp.port)
        if _is_http(proto):
            by_port.setdefault(sp.port, []).append(
                VirtualHost(name, vhost_domains(svc, pod.namespace), (default_route(cluster),)))
        elif proto == "AUTO":
            # One service behind the sniffed listener: its only virtual host takes `*`.
            sniffed.append(RouteConfiguration(name, (VirtualHost(name, ("*",),
                                                                 (default_route(cluster),)),)))
    ports = [RouteConfiguration(str(port), tuple(sorted(vhs, key=lambda v: v.name))
                                + (allow_any_vhost(),))
             for port, vhs in sorted(by_port.items())]
    return ports + sorted(sniffed, key=lambda r: r.name)


def _outbound_tcp_chain(name: str, cluster: str) -> FilterChain:
    return FilterChain(name=name, tcp=TcpProxy(stat_prefix=cluster, cluster=cluster))


def _passthrough_chain() -> FilterChain:
    return FilterChain(name="PassthroughFilterChain",
                       tcp=TcpProxy(stat_prefix=PASSTHROUGH_CLUSTER, cluster=PASSTHROUGH_CLUSTER))


def _http_match() -> FilterChainMatch:
    return FilterChainMatch(transport_protocol=RAW_BUFFER, application_protocols=PLAINTEXT_HTTP_ALPNS)


def outbound_listeners(view: MeshView, capture: str) -> list[Listener]:
    inspect = ("tls_inspector", "http_inspector")
    listeners: dict[str, Listener] = {}
    for svc, sp, proto in _outbound_ports(view):
        cluster = outbound_cluster_name(sp.port, svc.fqdn)
        if _is_http(proto):
            name = port_listener_name(sp.port)
            if name in listeners:
                continue
            hcm = HttpConnectionManager(stat_prefix=f"outbound_{name}", rds=str(sp.port),
                                        alpn_override=True)
            listeners[name] = Listener(
                name, WILDCARD, sp.port, "OUTBOUND", bind_to_port=False, listener_filters=inspect,
                filter_chains=(FilterChain(name="", match=_http_match(), http=hcm),),
                default_filter_chain=_passthrough_chain())
            continue
        name = vip_listener_name(svc.vip, sp.port)
        if proto == "TCP":
            listeners[name] = Listener(name, svc.vip, sp.port, "OUTBOUND", bind_to_port=False,
                                       filter_chains=(_outbound_tcp_chain("", cluster),))
        else:  # AUTO: sniff; HTTP goes through the service's own route config
            hcm = HttpConnectionManager(stat_prefix=f"outbound_{name}",
                                        rds=vhost_name(svc.fqdn, sp.port), alpn_override=True)
            listeners[name] = Listener(
                name, svc.vip, sp.port, "OUTBOUND", bind_to_port=False, listener_filters=inspect,
                filter_chains=(FilterChain(name="", match=_http_match(), http=hcm),),
                default_filter_chain=_outbound_tcp_chain("", cluster))
    virtual = Listener(
        VIRTUAL_OUTBOUND, WILDCARD, mesh.OUTBOUND_PORT, "OUTBOUND", use_original_dst=True,
        transparent=capture == "tproxy",
        filter_chains=(
            FilterChain("virtualOutbound-blackhole", FilterChainMatch(destination_port=mesh.OUTBOUND_PORT),
                        tcp=TcpProxy(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)),
            FilterChain("virtualOutbound-catchall-tcp",
                        tcp=TcpProxy(PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER))))
    return [virtual, *listeners.values()]


def endpoint_transport(view: MeshView, dest: Workload | None, port: int) -> tuple[bool, bool, Transport]:
    """(tlsMode istio, supports HBONE, what this sidecar sends), as istiod 1.24 decides.

    `mtlsEnabled` needs the `security.istio.io/tlsMode: istio` label (only injection adds
    it; ambient pods never carry it) and a destination mode other than DISABLE. HBONE
    needs a tunnel-capable endpoint (the tunnel label, or ambient in WDS) and is dropped
    whenever legacy mTLS is possible and PILOT_PREFER_SENDING_HBONE is off.
    """
    if dest is None:
        return False, False, "plaintext"
    tls_istio = dest.labels.get(mesh.TLS_MODE_LABEL) == "istio"
    mtls = tls_istio and mtls_mode(view, dest, port) != "DISABLE"
    tunnel = view.send_hbone and dest.speaks_hbone
    send_tunnel = tunnel and not (mtls and not view.prefer_hbone)
    return tls_istio, tunnel, "hbone" if send_tunnel else "mtls" if mtls else "plaintext"


def outbound_clusters(view: MeshView) -> list[Cluster]:
    out = []
    for svc, sp, proto in _outbound_ports(view):
        name = outbound_cluster_name(sp.port, svc.fqdn)
        eps = []
        sans = set()
        for ep in sp.endpoints:
            dest = view.pod(ep.pod)
            tls_istio, hbone, transport = endpoint_transport(view, dest, ep.port)
            sa = dest.service_account if dest else ""
            if dest is not None:
                sans.add(dest.identity(view.trust_domain))
            eps.append(LbEndpoint(address=ep.ip, port=ep.port, workload=ep.pod, service_account=sa,
                                  tls_mode="istio" if tls_istio else "disabled", hbone=hbone,
                                  transport=transport))
        alpn = CLIENT_H2_ALPNS if proto == "HTTP2" else CLIENT_TCP_ALPNS
        out.append(Cluster(
            name=name, type="EDS", direction="outbound", service=svc.fqdn, port=sp.port,
            protocol=proto, endpoints=tuple(eps),
            tls=UpstreamTls(sni=outbound_sni(sp.port, svc.fqdn), alpn_protocols=alpn,
                            subject_alt_names=tuple(sorted(sans))),
            services=(ServiceRef(svc.fqdn, svc.name, svc.namespace),)))
    return out


def static_clusters(view: MeshView, hbone_listen: bool) -> list[Cluster]:
    out = [Cluster(BLACKHOLE_CLUSTER, "STATIC"),
           Cluster(PASSTHROUGH_CLUSTER, "ORIGINAL_DST"),
           Cluster(INBOUND_PASSTHROUGH_CLUSTER, "ORIGINAL_DST",
                   upstream_bind_address=INBOUND_PASSTHROUGH_BIND)]
    if hbone_listen:
        out.append(Cluster(MAIN_INTERNAL, "STATIC"))
    if view.send_hbone:
        # TLS 1.3 only, ALPN h2, any identity of the trust domain: istiod passes no SAN
        # matcher for sidecars (cluster.go), only the trust-domain prefix (listener_waypoint.go).
        out.append(Cluster(CONNECT_ORIGINATE, "ORIGINAL_DST", tls=UpstreamTls(
            sni="", alpn_protocols=HBONE_ALPNS, subject_alt_names=(),
            subject_alt_name_prefixes=(f"{mesh.SPIFFE_SCHEME}{view.trust_domain}/",),
            min_version="TLSv1_3")))
    return out


# -- inbound ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _InboundPort:
    target: int  # the pod port: chain match and cluster name
    service_port: int  # the vhost name's port
    protocol: Protocol
    services: tuple[ServiceRef, ...]


def _inbound_ports(view: MeshView, pod: Workload) -> list[_InboundPort]:
    """One per target port of the Services selecting the pod; the first Service wins a
    conflict, as istiod keeps the oldest; every Service is kept in the metadata."""
    found: dict[int, _InboundPort] = {}
    for svc in view.services:
        for sp in svc.ports:
            proto = port_protocol(sp)
            if proto is None:
                continue
            for ep in sp.endpoints:
                if ep.pod != pod.key:
                    continue
                ref = ServiceRef(svc.fqdn, svc.name, svc.namespace)
                cur = found.get(ep.port)
                if cur is None:
                    found[ep.port] = _InboundPort(ep.port, sp.port, proto, (ref,))
                elif ref not in cur.services:
                    found[ep.port] = _InboundPort(cur.target, cur.service_port, cur.protocol,
                                                  cur.services + (ref,))
    return [found[p] for p in sorted(found)]


@dataclass(frozen=True)
class _Opt:
    """One filter-chain option of filterchain_options.go."""

    http: bool
    transport: str
    alpns: tuple[str, ...] = ()
    tls: bool = False


_OPTIONS: dict[tuple[str, str], tuple[_Opt, ...]] = {
    ("HTTP", "STRICT"): (_Opt(True, TLS, (), True),),
    ("HTTP", "PERMISSIVE"): (_Opt(True, TLS, MTLS_ALPNS, True), _Opt(True, RAW_BUFFER)),
    ("HTTP", "DISABLE"): (_Opt(True, RAW_BUFFER),),
    ("TCP", "STRICT"): (_Opt(False, TLS, (), True),),
    ("TCP", "PERMISSIVE"): (_Opt(False, TLS, MTLS_ALPNS, True), _Opt(False, TLS),
                           _Opt(False, RAW_BUFFER)),
    ("TCP", "DISABLE"): (_Opt(False, RAW_BUFFER),),
    ("AUTO", "STRICT"): (_Opt(True, TLS, MTLS_HTTP_ALPNS, True), _Opt(False, TLS, (), True)),
    ("AUTO", "PERMISSIVE"): (_Opt(True, TLS, MTLS_HTTP_ALPNS, True),
                             _Opt(True, RAW_BUFFER, PLAINTEXT_HTTP_ALPNS),
                             _Opt(False, TLS, CLIENT_TCP_ALPNS, True),
                             _Opt(False, RAW_BUFFER), _Opt(False, TLS)),
    ("AUTO", "DISABLE"): (_Opt(True, RAW_BUFFER, PLAINTEXT_HTTP_ALPNS), _Opt(False, RAW_BUFFER)),
}


def filter_chain_options(protocol: Protocol, mode: MtlsMode) -> tuple[_Opt, ...]:
    kind = "HTTP" if _is_http(protocol) else protocol
    return _OPTIONS[(kind, mode)]


def _inbound_route(cluster: str, service_port: int) -> RouteConfiguration:
    return RouteConfiguration(cluster, (VirtualHost(f"inbound|http|{service_port}", ("*",),
                                                    (Route(DEFAULT_ROUTE, cluster),)),))


def _inbound_chains(target: int | None, service_port: int, protocol: Protocol, mode: MtlsMode,
                    cluster: str, *, passthrough: bool, hbone: bool = False,
                    pod_ip: str = "") -> list[FilterChain]:
    chains = []
    stat = cluster if passthrough else f"inbound_{WILDCARD}_{target}"
    for opt in filter_chain_options(protocol, mode):
        match = FilterChainMatch(destination_port=target,
                                 prefix_ranges=(f"{pod_ip}/32",) if hbone and pod_ip else (),
                                 transport_protocol=opt.transport, application_protocols=opt.alpns)
        tls = DownstreamTls(alpn_protocols=SERVER_HTTP_ALPNS if opt.http else SERVER_TCP_ALPNS) \
            if opt.tls else None
        if passthrough:
            name = "virtualInbound-catchall-http" if opt.http else VIRTUAL_INBOUND
        else:
            name = f"{WILDCARD}_{target}"
        if opt.http:
            chains.append(FilterChain(name, match, tls, http=HttpConnectionManager(
                stat_prefix=stat, route_config=_inbound_route(cluster, service_port),
                metadata_exchange=not hbone), hbone=hbone))
        else:
            chains.append(FilterChain(name, match, tls, tcp=TcpProxy(stat, cluster),
                                      metadata_exchange=not hbone, hbone=hbone))
    return chains


def inbound(view: MeshView, pod: Workload, capture: str, hbone_listen: bool
            ) -> tuple[list[Listener], list[Cluster]]:
    ports = _inbound_ports(view, pod)
    chains: list[FilterChain] = []
    clusters: list[Cluster] = []
    for p in ports:
        cluster = inbound_cluster_name(p.target)
        chains += _inbound_chains(p.target, p.service_port, p.protocol,
                                  mtls_mode(view, pod, p.target), cluster, passthrough=False)
        clusters.append(Cluster(cluster, "ORIGINAL_DST", "inbound", port=p.target,
                                protocol=p.protocol, upstream_bind_address=INBOUND_PASSTHROUGH_BIND,
                                services=p.services))
    chains.append(FilterChain("virtualInbound-blackhole",
                              FilterChainMatch(destination_port=mesh.INBOUND_PORT),
                              tcp=TcpProxy(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER),
                              metadata_exchange=True))
    chains += _inbound_chains(None, 0, "AUTO", mtls_mode(view, pod, None),
                              INBOUND_PASSTHROUGH_CLUSTER, passthrough=True)
    covered = {p.target for p in ports}
    for port in _port_level_ports(view, pod):
        if port not in covered:  # needPerPortPassthroughFilterChain
            chains += _inbound_chains(port, 0, "AUTO", mtls_mode(view, pod, port),
                                      INBOUND_PASSTHROUGH_CLUSTER, passthrough=True)
    inspect = ("original_dst", "tls_inspector", "http_inspector")
    listeners = [Listener(VIRTUAL_INBOUND, WILDCARD, mesh.INBOUND_PORT, "INBOUND",
                          use_original_dst=True, transparent=capture == "tproxy",
                          listener_filters=inspect, filter_chains=tuple(chains),
                          access_log_nr_only=True)]
    if hbone_listen:
        listeners += _hbone_listeners(pod, ports)
    return listeners, clusters


def _hbone_listeners(pod: Workload, ports: Sequence[_InboundPort]) -> list[Listener]:
    """`connect_terminate` on 15008 → CONNECT → `main_internal`, whose chains are the
    inbound ones with mTLS off (already decrypted), matching only the pod's IP, and
    without metadata exchange (buildInboundHBONEListeners)."""
    terminate = Listener(
        CONNECT_TERMINATE, WILDCARD, mesh.HBONE_PORT, "INBOUND",
        filter_chains=(FilterChain(
            DEFAULT_ROUTE, tls=DownstreamTls(alpn_protocols=HBONE_ALPNS, min_version="TLSv1_3"),
            http=HttpConnectionManager(
                stat_prefix=CONNECT_TERMINATE, metadata_exchange=False, connect_terminate=True,
                connect_authority=True,
                route_config=RouteConfiguration(DEFAULT_ROUTE, (VirtualHost(
                    DEFAULT_ROUTE, ("*",), (Route("", MAIN_INTERNAL, connect_matcher=True),)),)))),))
    chains: list[FilterChain] = []
    for p in ports:
        chains += _inbound_chains(p.target, p.service_port, p.protocol, "DISABLE",
                                  inbound_cluster_name(p.target), passthrough=False, hbone=True,
                                  pod_ip=pod.ip)
    chains += _inbound_chains(None, 0, "AUTO", "DISABLE", INBOUND_PASSTHROUGH_CLUSTER,
                              passthrough=True, hbone=True, pod_ip=pod.ip)
    internal = Listener(MAIN_INTERNAL, "", 0, "INBOUND", bind_to_port=False,
                        listener_filters=("original_dst", "tls_inspector", "http_inspector"),
                        filter_chains=tuple(chains))
    return [terminate, internal]


def _connect_originate() -> Listener:
    return Listener(CONNECT_ORIGINATE, "", 0, "OUTBOUND", bind_to_port=False,
                    listener_filters=("original_dst",),
                    filter_chains=(FilterChain("", tcp=TcpProxy(
                        CONNECT_ORIGINATE, CONNECT_ORIGINATE,
                        tunneling_hostname="%DOWNSTREAM_LOCAL_ADDRESS%")),))


# -- the whole config ---------------------------------------------------------------------------


def build(view: MeshView, pod: Workload, capture: str, hbone_listen: bool) -> SidecarXds:
    """Everything istiod would push to the sidecar of `pod`."""
    in_listeners, in_clusters = inbound(view, pod, capture, hbone_listen)
    listeners = outbound_listeners(view, capture) + in_listeners
    if view.send_hbone:
        listeners.append(_connect_originate())
    clusters = outbound_clusters(view) + in_clusters + static_clusters(view, hbone_listen)
    return SidecarXds(tuple(listeners), tuple(outbound_route_configs(view, pod)), tuple(clusters))

