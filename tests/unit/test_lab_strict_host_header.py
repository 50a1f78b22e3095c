"""The strict-host-header lab without root: its checks on evidence shaped like real Istio
output, the models its variants build and what istiod's config makes of them, its sections.

The access-log lines below follow Istio 1.23+'s TEXT format with the values of real
reports: the UC line of istio#45802 (`503 UC upstream_reset_before_response_started
{connection_termination} - "-" 0 95 …`) and the NR line of kyma#12092 / istio#51982
(`"- - -" 0 NR filter_chain_not_found - "-" 0 0 0 - "-" "-" "-" "-" "-" - - …`).
"""

from __future__ import annotations

import copy
import importlib
import json
import ssl
from typing import Any

import pytest

from netlab.labs import registry
from netlab.labs.framework import evaluate
from netlab.labs.sections import Text
from netlab.labs.strict_host_header import expectations as x
from netlab.labs.strict_host_header.sections import sections
from netlab.observe import proxylog
from netlab.plan.planner import plan

LAB = registry.get("strict-host-header")
t = importlib.import_module("netlab.labs.strict_host_header.traffic")  # the package exports traffic()
FQDN = "prometheus.monitoring.svc.cluster.local"
SNI = f"outbound_.9090_._.{FQDN}"
PLP, PROM, GRAF = "10.244.0.3", "10.244.1.2", "10.244.0.2"


def _line(req: str, code: str, flags: str, details: str, sent: int, authority: str, host: str,
          cluster: str, local: str, down: str, remote: str, sni: str, route: str) -> str:
    return (f'[2025-03-11T10:00:00.000Z] "{req}" {code} {flags} {details} - "-" 0 {sent} 3 - "-" '
            f'"curl/7.88.1" "id-1" "{authority}" "{host}" {cluster} {local} {down} {remote} {sni} {route}')


def _parsed(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        rec = proxylog.envoy(line, "sidecar")
        assert rec is not None, line
        out.append(dict(rec.fields, line=line))
    return out


UC = _line("GET /api/v1/query?query=up HTTP/1.1", "503", "UC", x.UC_DETAILS, 95, x.PROXY_HOST,
           "10.96.0.12:9090", "PassthroughCluster", f"{PLP}:60050", "10.96.0.12:9090",
           f"{PLP}:60034", "-", "allow_any")
NR = (f'[2025-03-11T10:00:00.000Z] "- - -" 0 NR filter_chain_not_found - "-" 0 0 0 - "-" "-" "-" '
      f'"-" "-" - - {PROM}:9090 {PLP}:60050 - -')
GRAFANA_URX = _line("GET /api/v1/query?query=up HTTP/1.1", "503", "URX", "via_upstream", 95,
                    x.PROXY_HOST, f"{PLP}:8080",
                    "outbound|8080||prom-label-proxy.monitoring.svc.cluster.local",
                    f"{GRAF}:43712", "10.96.0.11:8080", f"{GRAF}:59558", "-", "default")
EXPLICIT = {"listeners": [["0.0.0.0", "9090", "Trans: raw_buffer; App: http/1.1,h2c", "Route: 9090"],
                          ["0.0.0.0", "9090", "ALL", "PassthroughCluster"]],
            "route_configs": [{"name": "9090", "virtual_hosts": [
                {"name": f"{FQDN}:9090", "domains": [FQDN, "prometheus.monitoring", "10.96.0.12"],
                 "routes": ["default"]},
                {"name": "allow_any", "domains": ["*"], "routes": ["allow_any"]}]}]}


def _strict() -> dict[str, Any]:
    return {
        "pods": {"grafana": {"ip": GRAF}, "label_proxy": {"ip": PLP}, "prometheus": {"ip": PROM}},
        "port": 9090, "fqdn": FQDN, "sni": SNI, "link": {"node": "node-2"},
        "declared": {"service": {"annotations": {}, "ports": [{"name": "http-web", "port": 9090}]}},
        "proxy_config": copy.deepcopy(EXPLICIT),
        "client": {"exit_code": 0, "http_code": "503", "body": x.BODY_95, "body_bytes": 95},
        "logs": {"grafana": _parsed([GRAFANA_URX]), "label_proxy": _parsed([UC, UC, UC]),
                 "prometheus": _parsed([NR, NR, NR])},
        "metrics": {"label_proxy": [{"name": "istio_requests_total", "value": 3.0, "labels": {
            "reporter": "source", "destination_service_name": "PassthroughCluster",
            "destination_service": x.PROXY_HOST, "response_code": "503", "response_flags": "UC"}}],
            "prometheus": []},
        "wire": {"segments_to_server": 9, "segments_from_server": 9, "bytes_to_server": 2478,
                 "bytes_from_server": 0, "server_flags": ["A", "RA", "SA"],
                 "requests_in_clear": [f"GET {t.QUERY} HTTP/1.1\r\nHost: {x.PROXY_HOST}"],
                 "replies_in_clear": [], "query_in_clear": True, "answer_in_clear": False,
                 "client_hellos": [], "samples": []},
    }


def _verdicts(variant: str, ev: dict[str, Any]) -> dict[str, Any]:
    return {v.id: v for v in evaluate(LAB.variant(variant), ev)}


def test_strict_is_reproduced_from_istios_own_lines() -> None:
    verdicts = _verdicts("strict", _strict())
    assert all(v.held for v in verdicts.values()), [(v.id, v.seen) for v in verdicts.values()
                                                    if not v.held]
    assert "PassthroughCluster" in verdicts["passthrough-uc"].seen
    assert "filter_chain_not_found" in verdicts["nr-filter-chain"].seen


def test_the_body_must_be_the_95_bytes_exactly() -> None:
    ev = _strict()
    ev["client"].update(body=x.BODY_95 + "\n", body_bytes=96)
    assert not x.got_503_95(ev)[0]
    ev["client"].update(body="upstream connect error or disconnect/reset before headers. retried "
                             "and the latest reset reason: connection termination", body_bytes=121)
    held, seen = x.got_503_95(ev)
    assert not held and "121-byte" in seen


def test_a_hop_through_the_service_cluster_is_not_the_report() -> None:
    ev = _strict()
    ok = UC.replace(" PassthroughCluster ", f" outbound|9090||{FQDN} ").replace(" allow_any", " default")
    ev["logs"]["label_proxy"] = _parsed([UC, UC, ok])
    held, seen = x.hop_logged({"upstream_cluster": "PassthroughCluster", "route_name": "allow_any"},
                              every=True)(ev)
    assert not held and "route=default" in seen


def test_an_http_line_at_prometheus_means_a_request_reached_it() -> None:
    ev = _strict()
    served = _line(f"GET {t.QUERY} HTTP/1.1", "200", "-", "via_upstream", 63, x.PROXY_HOST,
                   f"{PROM}:9090", "inbound|9090||", "127.0.0.6:4000", f"{PROM}:9090",
                   f"{PLP}:60050", "-", "default")
    ev["logs"]["prometheus"] = _parsed([NR, served])
    assert not x.server_only_nr(ev)[0]


def test_strict_evidence_is_not_a_fix() -> None:
    verdicts = _verdicts("fix-rewrite-host", _strict())
    assert not verdicts["answered"].held and "HTTP 503" in verdicts["answered"].seen
    assert not verdicts["tls-on-wire"].held and "requests in clear: GET" in verdicts["tls-on-wire"].seen
    assert not verdicts["route-default"].held


def test_tls_only_needs_the_sni_and_nothing_readable() -> None:
    ev = _strict()
    ev["wire"].update(client_hellos=[{"sni": SNI, "alpn": ["istio-http/1.1", "istio", "http/1.1"]}],
                      requests_in_clear=[], query_in_clear=False)
    assert x.tls_only_on_wire(ev)[0] and x.alpn_offered("istio-http/1.1")(ev)[0]
    assert not x.alpn_offered("istio-peer-exchange")(ev)[0]
    ev["wire"]["answer_in_clear"] = True
    assert not x.tls_only_on_wire(ev)[0]
    ev["wire"].update(answer_in_clear=False, client_hellos=[{"sni": "prometheus", "alpn": []}])
    assert not x.tls_only_on_wire(ev)[0]


def test_sniffed_route_needs_domains_star_and_no_port_route() -> None:
    ev = _strict()
    assert not x.sniffed_route(ev)[0] and x.explicit_http_listener(ev)[0]
    ev["proxy_config"] = {"listeners": [["10.96.0.12", "9090", "ALL", f"Cluster: outbound|9090||{FQDN}"]],
                          "route_configs": [{"name": f"{FQDN}:9090", "virtual_hosts": [
                              {"name": f"{FQDN}:9090", "domains": ["*"], "routes": ["default"]}]}]}
    assert x.sniffed_route(ev)[0] and not x.explicit_http_listener(ev)[0]


def test_client_hello_is_decoded_from_the_bytes() -> None:
    """A ClientHello as Python's ssl (OpenSSL) writes it, read back by the lab's decoder."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["istio-peer-exchange", "istio"])
    out = ssl.MemoryBIO()
    conn = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=SNI)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    hello = t._client_hello(out.read())
    assert hello == {"sni": SNI, "alpn": ["istio-peer-exchange", "istio"]}
    assert t._client_hello(b"GET / HTTP/1.1\r\n") is None
    assert t._client_hello(b"\x16\x03\x01\x00") is None


# -- the variants' models, and what istiod's config makes of them ---------------------------

def _model(variant: str):  # type: ignore[no-untyped-def]
    return LAB.model(LAB.variant(variant))


def _sidecar_config(variant: str, pod: str = "monitoring/prom-label-proxy-0") -> dict[str, Any]:
    state = plan(_model(variant))
    (proc,) = [p for p in state.processes if p.name == f"sidecar/{pod}"]
    return json.loads(proc.config or "{}")


def test_variants_change_only_what_they_say() -> None:
    base = LAB.topology()
    prom = {v: next(s for s in _model(v).services if s.name == "prometheus") for v in
            ("strict", "annotation", "fix-app-protocol-tcp", "fix-unnamed-port")}
    assert prom["annotation"].annotations == {x.ANNOTATION: "tcp"}
    assert prom["fix-app-protocol-tcp"].ports[0].app_protocol == "tcp"
    assert prom["fix-app-protocol-tcp"].ports[0].name == "http-web"
    assert prom["fix-unnamed-port"].ports[0].name is None
    assert [r.kind for r in _model("permissive").resources] == []
    assert [r.kind for r in _model("strict").resources] == ["PeerAuthentication"]
    proxy = next(d for d in _model("fix-rewrite-host").deployments if d.name == "prom-label-proxy")
    assert proxy.containers[0].args[-2:] == ["--rewrite-host-header-to", f"{FQDN}:9090"]
    # The base model is untouched by any variant's change.
    assert next(s for s in base.services if s.name == "prometheus").annotations == {}


def test_the_annotation_changes_nothing_istiod_pushes() -> None:
    """Istio reads no `networking.istio.io/service-protocol`: every sidecar's config is the
    same with it as without it, while appProtocol and the port name do change it."""
    pods = ("monitoring/prom-label-proxy-0", "monitoring/prometheus-0", "grafana/grafana-0")
    for pod in pods:
        assert _sidecar_config("annotation", pod) == _sidecar_config("strict", pod)
    assert _sidecar_config("fix-app-protocol-tcp") != _sidecar_config("strict")
    assert _sidecar_config("fix-unnamed-port") != _sidecar_config("strict")


def test_prometheus_runs_debians_binary_in_its_pod() -> None:
    state = plan(_model("strict"))
    (proc,) = [p for p in state.processes if p.name == "app/monitoring/prometheus-0/prometheus"]
    assert proc.argv[1:3] == ("-m", "netlab.telemetry.prometheus_process")
    assert "/usr/bin/prometheus" in proc.argv and "0.0.0.0:9090" in proc.argv
    assert proc.signals_ready and [r.port for r in proc.ready] == [9090]


def test_sections_mark_the_deciding_lines() -> None:
    from netlab.labs.framework import VariantResult
    ev = _strict()
    r = VariantResult("strict-host-header", "strict", "", LAB.variant("strict").outcome, "i", 1.0,
                      evaluate(LAB.variant("strict"), ev), ev)
    texts = {s.title: s for s in sections(r) if isinstance(s, Text)}
    server = texts["Access log: Prometheus' sidecar (server)"]
    assert server.marked(server.lines[0]) and "STRICT" in (server.marked(server.lines[0]) or "")
    proxy = texts["Access log: the label proxy's sidecar"]
    assert "allow_any" in (proxy.marked(proxy.lines[0]) or "")
    assert sections(VariantResult("strict-host-header", "strict", "", r.expected, "i", 0.0, [], {})) == ()
