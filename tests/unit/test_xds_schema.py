"""The sidecar config schema survives JSON by field name, and refuses what it does not know."""

from __future__ import annotations

import json

import pytest

from netlab import snapshot, xds


def _snap() -> xds.SidecarSnapshot:
    inbound = xds.FilterChain(
        "inbound|9090||", xds.FilterChainMatch(destination_port=9090, transport_protocol="tls"),
        tls=xds.DownstreamTls(),
        http=xds.HttpConnectionManager("inbound_0.0.0.0_9090", route_config=xds.RouteConfiguration(
            "inbound|9090||", (xds.VirtualHost("inbound|http|9090", ("*",), (
                xds.Route("default", "inbound|9090||"),)),))))
    return xds.SidecarSnapshot(
        workload=snapshot.Workload("monitoring", "prometheus-0", ip="10.244.0.5"),
        node="node-1", trust_domain="cluster.local", capture="redirect", workdir="/w",
        ca=snapshot.CertAuthority("https://ca", "/ca", "/ca/root-cert.pem"),
        bootstrap=snapshot.Bootstrap("/w/c.pem", "/w/k.pem"), hbone=True,
        listeners=(xds.Listener("virtualInbound", "0.0.0.0", 15006, "INBOUND",
                                filter_chains=(inbound,)),),
        clusters=(xds.Cluster("outbound|9090||p.m.svc.cluster.local", "EDS", "outbound",
                              endpoints=(xds.LbEndpoint("10.244.0.5", 9090, "m/p-0", "p",
                                                        "istio", True, "mtls"),),
                              tls=xds.UpstreamTls("sni", xds.CLIENT_TCP_ALPNS, ("spiffe://x",))),))


def test_round_trip_by_field_name(tmp_path):
    s = _snap()
    path = tmp_path / "s.json"
    path.write_text(s.to_json())
    assert xds.SidecarSnapshot.load(str(path)) == s
    raw = json.loads(s.to_json())
    assert raw["listeners"][0]["filter_chains"][0]["match"]["transport_protocol"] == "tls"
    assert raw["access_log"]["text_format"].endswith("%ROUTE_NAME%\n")


def test_unknown_key_is_named():
    raw = json.loads(_snap().to_json())
    raw["clusters"][0]["endpoints"][0]["colour"] = "red"
    with pytest.raises(snapshot.SnapshotError, match=r"endpoints\[0\].*colour"):
        snapshot.from_dict(xds.SidecarSnapshot, raw)


def test_bad_transport_is_refused():
    raw = json.loads(_snap().to_json())
    raw["clusters"][0]["endpoints"][0]["transport"] = "carrier-pigeon"
    with pytest.raises(snapshot.SnapshotError, match="transport"):
        snapshot.from_dict(xds.SidecarSnapshot, raw)


def test_names():
    fqdn = "prometheus.monitoring.svc.cluster.local"
    assert xds.outbound_cluster_name(9090, fqdn) == "outbound|9090||" + fqdn
    assert xds.outbound_sni(9090, fqdn) == "outbound_.9090_._." + fqdn
    assert xds.inbound_cluster_name(9090) == "inbound|9090||"
