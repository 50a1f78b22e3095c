"""`netlab proxy-config` tables and JSON, shaped as istioctl 1.24 prints them.

Expected rows follow istioctl's writer code (istioctl/pkg/writer/envoy/configdump) and the
rows Istio's docs show for a sidecar (e.g. `0.0.0.0 15001 ALL PassthroughCluster`,
`Trans: raw_buffer; App: http/1.1,h2c Route: 9080`), not netlab's own earlier output.
"""

from __future__ import annotations

import json

from netlab import snapshot, xds
from netlab.observe import proxy_config as pc
from tests.unit.test_sidecar_xds import GRAFANA, PROM, _cfg


def _snap(pod=PROM) -> xds.SidecarSnapshot:
    cfg = _cfg(pod)
    return xds.SidecarSnapshot(workload=pod, node="node-1", trust_domain="cluster.local",
                               capture="redirect", workdir="/w", ca=snapshot.CertAuthority("u", "d", "r"),
                               bootstrap=snapshot.Bootstrap("c", "k"), listeners=cfg.listeners,
                               route_configs=cfg.route_configs, clusters=cfg.clusters)


def test_tabwriter_pads_like_go():
    assert pc.tabwrite(("A", "BB", "C"), [["xxx", "y", "z"]], 1) == "A   BB C\nxxx y  z\n"


def test_listener_table():
    text = pc.table(_snap(), "listeners")
    lines = text.splitlines()
    assert lines[0].split() == ["ADDRESSES", "PORT", "MATCH", "DESTINATION"]
    squeezed = [" ".join(line.split()) for line in lines]
    assert "0.0.0.0 15001 ALL PassthroughCluster" in squeezed
    assert "0.0.0.0 15001 Addr: *:15001 Non-HTTP/Non-TCP" in squeezed
    assert "0.0.0.0 9090 Trans: raw_buffer; App: http/1.1,h2c Route: 9090" in squeezed
    assert "0.0.0.0 9090 ALL PassthroughCluster" in squeezed
    assert "0.0.0.0 15006 Trans: tls; Addr: *:9090 Cluster: inbound|9090||" in squeezed
    assert ("10.96.0.21 8080 Trans: raw_buffer; App: http/1.1,h2c "
            "Route: label-proxy.monitoring.svc.cluster.local:8080") in squeezed
    # Sorted by port: 15001 before 15006 before 15008.
    ports = [int(line.split()[1]) for line in lines[1:] if line.startswith("0.0.0.0")]
    assert ports == sorted(ports)


def test_match_names_istioctl_alpn_lists():
    m = xds.FilterChainMatch(transport_protocol="tls", application_protocols=("istio-peer-exchange", "istio"))
    assert pc.match_text(m) == "Trans: tls; App: TCP TLS"
    assert pc.match_text(xds.FilterChainMatch(destination_port=8080, prefix_ranges=("10.0.0.1/32",))) == \
        "Addr: 10.0.0.1/32:8080"
    assert pc.match_text(None) == "ALL"


def test_route_table_hides_passthrough_routes_like_istioctl():
    text = pc.table(_snap(GRAFANA), "routes")
    header, *rows = [" ".join(line.split()) for line in text.splitlines()]
    assert header == "NAME VHOST NAME DOMAINS MATCH VIRTUAL SERVICE"
    assert ("9090 prometheus.monitoring.svc.cluster.local:9090 "
            "prometheus.monitoring, 10.96.0.20 /*") in rows
    assert not any("allow_any" in r for r in rows)
    assert "inbound|3000|| inbound|http|3000 * /*" in rows
    names = [r.split()[0] for r in rows]
    assert names.index("3000") < names.index("9080") < names.index("9090")  # numeric names sorted
    as_json = pc.as_json(_snap(GRAFANA), "routes")
    port_9090 = next(r for r in as_json if r["name"] == "9090")
    assert port_9090["virtual_hosts"][-1]["routes"][0]["name"] == "allow_any"


def test_domains_are_unexpanded_and_counted():
    fqdn = "prometheus.monitoring.svc.cluster.local"
    doms = (fqdn, "prometheus", "prometheus.monitoring.svc", "prometheus.monitoring", "10.96.0.20")
    assert pc.domains_text(doms) == "prometheus, prometheus.monitoring + 1 more..."


def test_cluster_table():
    rows = [" ".join(line.split()) for line in pc.table(_snap(), "clusters").splitlines()]
    assert rows[0] == "SERVICE FQDN PORT SUBSET DIRECTION TYPE DESTINATION RULE"
    assert "9090 - inbound ORIGINAL_DST" in rows  # inbound|9090|| has no FQDN
    assert "PassthroughCluster - - - ORIGINAL_DST" in rows
    assert "BlackHoleCluster - - - STATIC" in rows
    assert "prometheus.monitoring.svc.cluster.local 9090 - outbound EDS" in rows


def test_endpoint_table_names_hbone_endpoints_by_envoy_internal_address():
    rows = [" ".join(line.split()) for line in pc.table(_snap(GRAFANA), "endpoints").splitlines()]
    assert rows[0] == "ENDPOINT STATUS OUTLIER CHECK CLUSTER"
    assert "10.244.0.10:9090 HEALTHY OK outbound|9090||prometheus.monitoring.svc.cluster.local" in rows
    assert ("envoy://connect_originate/10.244.0.13:9080 HEALTHY OK "
            "outbound|9080||ratings.bookinfo.svc.cluster.local") in rows


def test_json_is_envoy_shaped_and_serialisable():
    snap = _snap()
    for kind in pc.KINDS:
        json.dumps(pc.as_json(snap, kind))
    listeners = pc.as_json(snap, "listeners")
    assert {x["name"] for x in listeners} >= {"virtualOutbound", "virtualInbound", "0.0.0.0_9090"}
    eps = pc.as_json(snap, "endpoints")
    prom = next(e for e in eps if e["cluster_name"].endswith("prometheus.monitoring.svc.cluster.local"))
    assert prom["endpoints"][0]["tls_mode"] == "istio"
