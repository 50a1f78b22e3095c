"""istiod's sidecar config, checked against the facts (mesh-facts §9, mesh-facts-2 §D1–§D3, §A4).

Every expected value is written from the facts and Istio's sources named in
docs/sidecar.md, never copied from the builder's output.
"""

from __future__ import annotations

import pytest

from netlab.plan.sidecar_xds import MeshView, build, port_protocol
from netlab.snapshot import Endpoint, Policy, Service, ServicePort, Workload
from netlab import xds

TD = "cluster.local"
PROM_FQDN = "prometheus.monitoring.svc.cluster.local"
LP_FQDN = "label-proxy.monitoring.svc.cluster.local"
INJECTED = {"security.istio.io/tlsMode": "istio"}


def _pod(ns: str, name: str, ip: str, sa: str, mode: str = "", tunnel: bool = False,
         labels: dict[str, str] | None = None) -> Workload:
    return Workload(namespace=ns, name=f"{name}-0", deployment=name, ip=ip, service_account=sa,
                    node="node-1", mode=mode, tunnel=tunnel, labels=dict(labels or {}))


PROM = _pod("monitoring", "prometheus", "10.244.0.10", "prometheus", "sidecar", True, INJECTED)
LP = _pod("monitoring", "label-proxy", "10.244.0.11", "label-proxy", "sidecar", True, INJECTED)
GRAFANA = _pod("grafana", "grafana", "10.244.0.12", "grafana", "sidecar", False, INJECTED)
RATINGS = _pod("bookinfo", "ratings", "10.244.0.13", "bookinfo-ratings", "ambient")
LEGACY = _pod("legacy", "db", "10.244.0.14", "default")

SERVICES = (
    Service("monitoring", "prometheus", "10.96.0.20",
            (ServicePort(9090, "http-web", endpoints=(Endpoint(PROM.key, PROM.ip, 9090),)),)),
    Service("monitoring", "label-proxy", "10.96.0.21",
            (ServicePort(8080, "web", endpoints=(Endpoint(LP.key, LP.ip, 8081),)),)),
    Service("bookinfo", "ratings", "10.96.0.22",
            (ServicePort(9080, "http", endpoints=(Endpoint(RATINGS.key, RATINGS.ip, 9080),)),)),
    Service("legacy", "db", "10.96.0.23",
            (ServicePort(5432, "tcp-postgres", endpoints=(Endpoint(LEGACY.key, LEGACY.ip, 5432),)),)),
    Service("grafana", "grafana", "10.96.0.24",
            (ServicePort(3000, None, app_protocol="http",
                         endpoints=(Endpoint(GRAFANA.key, GRAFANA.ip, 3000),)),)),
)
STRICT_MONITORING = Policy("PeerAuthentication", "monitoring", "strict",
                           {"mtls": {"mode": "STRICT"}})


def _view(policies=(STRICT_MONITORING,)) -> MeshView:
    return MeshView(TD, (PROM, LP, GRAFANA, RATINGS, LEGACY), SERVICES, tuple(policies))


def _cfg(pod: Workload, policies=(STRICT_MONITORING,)):
    return build(_view(policies), pod, "redirect", hbone_listen=pod.tunnel)


def _by_name(items):
    return {i.name: i for i in items}


def test_port_protocols_by_name_prefix_and_app_protocol():
    assert port_protocol(ServicePort(80, "http-web")) == "HTTP"
    assert port_protocol(ServicePort(80, "http2")) == "HTTP2"
    assert port_protocol(ServicePort(80, "grpc-api")) == "HTTP2"
    assert port_protocol(ServicePort(80, "tcp-db")) == "TCP"
    assert port_protocol(ServicePort(80, "web")) == "AUTO"
    assert port_protocol(ServicePort(80, None)) == "AUTO"
    assert port_protocol(ServicePort(80, "web", app_protocol="tcp")) == "TCP"
    assert port_protocol(ServicePort(80, "tcp-x", app_protocol="http")) == "HTTP"  # appProtocol wins
    assert port_protocol(ServicePort(53, "dns", protocol="UDP")) is None


def test_outbound_listener_names():
    names = [listener.name for listener in _cfg(GRAFANA).listeners]
    # Explicit HTTP ports share 0.0.0.0_<port>; auto and TCP ports listen per VIP.
    for expected in ("virtualOutbound", "virtualInbound", "0.0.0.0_9090", "0.0.0.0_9080",
                     "0.0.0.0_3000", "10.96.0.21_8080", "10.96.0.23_5432"):
        assert expected in names
    assert "10.96.0.20_9090" not in names
    assert "connect_terminate" not in names  # grafana carries no tunnel label


def test_explicit_http_port_listener_routes_by_port_and_falls_back_to_passthrough():
    listener = _by_name(_cfg(GRAFANA).listeners)["0.0.0.0_9090"]
    assert listener.port == 9090 and not listener.bind_to_port
    (chain,) = listener.filter_chains
    assert chain.http is not None and chain.http.rds == "9090"
    assert chain.match.transport_protocol == "raw_buffer"
    assert chain.match.application_protocols == ("http/1.1", "h2c")
    assert listener.default_filter_chain.tcp.cluster == "PassthroughCluster"


def test_sniffed_and_tcp_listeners():
    ls = _by_name(_cfg(GRAFANA).listeners)
    auto = ls["10.96.0.21_8080"]
    assert auto.filter_chains[0].http.rds == f"{LP_FQDN}:8080"
    assert auto.default_filter_chain.tcp.cluster == f"outbound|8080||{LP_FQDN}"
    tcp = ls["10.96.0.23_5432"]
    assert [c.tcp.cluster for c in tcp.filter_chains] == ["outbound|5432||db.legacy.svc.cluster.local"]
    virtual = ls["virtualOutbound"]
    assert virtual.port == 15001 and virtual.use_original_dst


def test_port_route_config_domains_from_another_namespace():
    rc = _by_name(_cfg(GRAFANA).route_configs)["9090"]
    assert rc.ignore_port_in_host_matching
    vh = _by_name(rc.virtual_hosts)[f"{PROM_FQDN}:9090"]
    # §D1: FQDN, <name>.<ns> and <name>.<ns>.svc from another namespace, the ClusterIP; no :port.
    assert set(vh.domains) == {PROM_FQDN, "prometheus.monitoring", "prometheus.monitoring.svc",
                               "10.96.0.20"}
    (route,) = vh.routes
    assert route.name == "default" and route.cluster == f"outbound|9090||{PROM_FQDN}"
    assert route.retry_policy.num_retries == 2
    assert route.retry_policy.retry_on == ("connect-failure,refused-stream,unavailable,cancelled,"
                                           "retriable-status-codes")
    assert route.retry_policy.retriable_status_codes == (503,)
    # The catch-all comes last: allow_any → PassthroughCluster without retries.
    catch_all = rc.virtual_hosts[-1]
    assert catch_all.name == "allow_any" and catch_all.domains == ("*",)
    assert [(r.name, r.cluster, r.retry_policy) for r in catch_all.routes] == \
        [("allow_any", "PassthroughCluster", None)]


def test_port_route_config_domains_from_the_same_namespace():
    rc = _by_name(_cfg(LP).route_configs)["9090"]
    vh = _by_name(rc.virtual_hosts)[f"{PROM_FQDN}:9090"]
    assert set(vh.domains) == {PROM_FQDN, "prometheus", "prometheus.monitoring.svc",
                               "prometheus.monitoring", "10.96.0.20"}
    assert not any(":" in d for d in vh.domains)


def test_sniffed_route_config_has_one_wildcard_vhost_and_no_catch_all():
    rc = _by_name(_cfg(GRAFANA).route_configs)[f"{LP_FQDN}:8080"]
    (vh,) = rc.virtual_hosts
    assert vh.domains == ("*",) and vh.name == f"{LP_FQDN}:8080"
    assert vh.routes[0].name == "default"


def test_outbound_cluster_mtls_to_a_sidecar():
    c = _by_name(_cfg(GRAFANA).clusters)[f"outbound|9090||{PROM_FQDN}"]
    assert c.type == "EDS"
    assert c.tls.sni == f"outbound_.9090_._.{PROM_FQDN}"
    assert c.tls.subject_alt_names == ("spiffe://cluster.local/ns/monitoring/sa/prometheus",)
    assert c.tls.alpn_protocols == ("istio-peer-exchange", "istio")  # §D3 cluster default
    (ep,) = c.endpoints
    assert (ep.address, ep.port, ep.tls_mode, ep.transport) == ("10.244.0.10", 9090, "istio", "mtls")
    # Tunnel-capable, but legacy mTLS wins while PILOT_PREFER_SENDING_HBONE is off.
    assert ep.hbone


def test_outbound_cluster_hbone_to_an_ambient_pod_and_plaintext_to_no_proxy():
    cs = _by_name(_cfg(GRAFANA).clusters)
    (ambient,) = cs["outbound|9080||ratings.bookinfo.svc.cluster.local"].endpoints
    assert (ambient.tls_mode, ambient.hbone, ambient.transport) == ("disabled", True, "hbone")
    (plain,) = cs["outbound|5432||db.legacy.svc.cluster.local"].endpoints
    assert (plain.tls_mode, plain.hbone, plain.transport) == ("disabled", False, "plaintext")
    assert "connect_originate" in cs


def test_no_hbone_sending_without_the_ambient_profile():
    view = MeshView(TD, (PROM, GRAFANA, RATINGS), SERVICES, (), send_hbone=False)
    cs = _by_name(build(view, GRAFANA, "redirect", False).clusters)
    (ambient,) = cs["outbound|9080||ratings.bookinfo.svc.cluster.local"].endpoints
    assert ambient.transport == "plaintext"
    assert "connect_originate" not in cs


def test_static_clusters():
    cs = _by_name(_cfg(PROM).clusters)
    assert cs["PassthroughCluster"].type == "ORIGINAL_DST" and cs["PassthroughCluster"].tls is None
    assert cs["BlackHoleCluster"].type == "STATIC"
    assert cs["InboundPassthroughCluster"].upstream_bind_address == "127.0.0.6"
    inbound = cs["inbound|9090||"]
    assert inbound.direction == "inbound" and inbound.upstream_bind_address == "127.0.0.6"


def _chains(pod, port, policies=(STRICT_MONITORING,)):
    vi = _by_name(_cfg(pod, policies).listeners)["virtualInbound"]
    return [c for c in vi.filter_chains if c.match.destination_port == port]


def test_strict_http_port_has_only_a_tls_chain():
    (chain,) = _chains(PROM, 9090)
    assert chain.match.transport_protocol == "tls" and chain.tls.require_client_certificate
    assert chain.http.route_config.name == "inbound|9090||"
    assert chain.tls.alpn_protocols == ("h2", "http/1.1")


def test_strict_auto_port_has_two_tls_chains():
    chains = _chains(LP, 8081)
    assert [c.match.transport_protocol for c in chains] == ["tls", "tls"]
    assert chains[0].match.application_protocols == ("istio-http/1.0", "istio-http/1.1", "istio-h2")
    assert chains[0].http is not None and chains[1].tcp is not None


def test_strict_passthrough_has_no_plaintext_chain():
    vi = _by_name(_cfg(PROM).listeners)["virtualInbound"]
    assert vi.default_filter_chain is None and vi.access_log_nr_only
    assert not [c for c in vi.filter_chains if c.match.transport_protocol == "raw_buffer"]


def test_permissive_http_port_takes_mtls_and_plaintext():
    chains = _chains(GRAFANA, 3000)
    assert [c.match.transport_protocol for c in chains] == ["tls", "raw_buffer"]
    assert chains[0].match.application_protocols == (
        "istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")


def test_permissive_auto_and_tcp_ports():
    auto = _chains(LP, 8081, policies=())
    assert len(auto) == 5
    assert ("raw_buffer", ("http/1.1", "h2c")) in [(c.match.transport_protocol,
                                                    c.match.application_protocols) for c in auto]
    db = Workload("legacy", "db-0", ip="10.244.0.14", labels=INJECTED, mode="sidecar")
    view = MeshView(TD, (db,), (SERVICES[3],), ())
    vi = _by_name(build(view, db, "redirect", False).listeners)["virtualInbound"]
    tcp = [c for c in vi.filter_chains if c.match.destination_port == 5432]
    assert [(c.match.transport_protocol, c.tls is not None) for c in tcp] == \
        [("tls", True), ("tls", False), ("raw_buffer", False)]


def test_port_level_mtls_overrides_the_namespace():
    pa = Policy("PeerAuthentication", "monitoring", "prom-port",
                {"selector": {"matchLabels": {"app": "prometheus"}},
                 "portLevelMtls": {9090: {"mode": "PERMISSIVE"}}})
    prom = Workload("monitoring", "prometheus-0", ip=PROM.ip, labels={**INJECTED, "app": "prometheus"},
                    mode="sidecar")
    view = MeshView(TD, (prom,), (SERVICES[0],), (STRICT_MONITORING, pa))
    vi = _by_name(build(view, prom, "redirect", False).listeners)["virtualInbound"]
    assert [c.match.transport_protocol for c in vi.filter_chains
            if c.match.destination_port == 9090] == ["tls", "raw_buffer"]


def test_hbone_listener_for_a_tunnel_pod():
    ls = _by_name(_cfg(PROM).listeners)
    term = ls["connect_terminate"]
    assert term.port == 15008
    (chain,) = term.filter_chains
    assert chain.tls.require_client_certificate and chain.http.connect_terminate
    internal = ls["main_internal"]
    assert internal.port == 0
    served = [c for c in internal.filter_chains if c.match.destination_port == 9090]
    assert served and all(c.hbone and c.tls is None for c in served)
    assert all(c.match.prefix_ranges == ("10.244.0.10/32",) for c in internal.filter_chains)
    assert "main_internal" in _by_name(_cfg(PROM).clusters)


def test_snapshot_round_trip():
    cfg = _cfg(PROM)
    from netlab.snapshot import Bootstrap, CertAuthority, from_json
    snap = xds.SidecarSnapshot(workload=PROM, node="node-1", trust_domain=TD, capture="redirect",
                               workdir="/w", ca=CertAuthority("u", "d", "r"), bootstrap=Bootstrap("c", "k"),
                               listeners=cfg.listeners, route_configs=cfg.route_configs,
                               clusters=cfg.clusters)
    assert from_json(xds.SidecarSnapshot, snap.to_json()) == snap


@pytest.mark.parametrize("pod", [PROM, LP, GRAFANA])
def test_every_route_names_a_known_cluster(pod):
    cfg = _cfg(pod)
    clusters = {c.name for c in cfg.clusters}
    for rc in cfg.route_configs:
        for vh in rc.virtual_hosts:
            assert {r.cluster for r in vh.routes} <= clusters
