"""The strict-host-header lab (istio#55472, prom-label-proxy#273/#383; mesh-facts §10d).

Grafana → prom-label-proxy → Prometheus, every pod with a sidecar. The label proxy
forwards with the incoming Host (Go's NewSingleHostReverseProxy), so its sidecar finds no
virtual host for `prom-label-proxy.monitoring:8080` on Prometheus' explicit HTTP port and
sends the request through `allow_any` → `PassthroughCluster`: plaintext. PERMISSIVE takes
it; STRICT has no plaintext filter chain, closes it (`NR filter_chain_not_found`), and the
client gets Envoy's 95-byte 503. The variants put each case on the real kernel and judge
what the client gets, what each sidecar logs and counts, and what crosses the node link.
"""

from __future__ import annotations

from pathlib import Path

from netlab.labs import changes
from netlab.labs.framework import Lab, Outcome, Variant, expect
from netlab.labs.strict_host_header import expectations as x
from netlab.labs.strict_host_header.sections import sections
from netlab.labs.strict_host_header.traffic import FQDN, PROM_PORT, traffic

CLUSTER = f"outbound|{PROM_PORT}||{FQDN}"
PROXY_HOST = x.PROXY_HOST
SRC_PRINCIPAL = "spiffe://cluster.local/ns/monitoring/sa/prom-label-proxy"

_strict = changes.chain()  # the topology is the report: mesh-wide STRICT
_permissive = changes.remove("PeerAuthentication", "istio-system", "default")
_annotated = changes.annotate_service("monitoring", "prometheus", {x.ANNOTATION: "tcp"})
_rewrite = changes.container_args("monitoring", "prom-label-proxy", "prom-label-proxy",
                                  ["--rewrite-host-header-to", f"{FQDN}:{PROM_PORT}"])
_tcp = changes.service_port("monitoring", "prometheus", PROM_PORT, app_protocol="tcp")
_unnamed = changes.service_port("monitoring", "prometheus", PROM_PORT, name=None)

# -- expectations shared by variants ----------------------------------------------------------
_answered = expect("answered", "curl gets Prometheus' own answer: 200, "
                   '{"status":"success","data":{"resultType":"vector",...}}',
                   x.prometheus_answered, "client")
_503 = expect("503-95", f"curl gets 503 with exactly the 95-byte body {x.BODY_95!r}",
              x.got_503_95, "client")
_passthrough_uc = expect(
    "passthrough-uc", "the label proxy's sidecar logs its hop as 503 UC "
    f"{x.UC_DETAILS}, authority {PROXY_HOST}, upstream cluster PassthroughCluster, "
    "route allow_any (no retry: allow_any has no retry policy)",
    x.hop_logged({"response_code": "503", "response_flags": "UC",
                  "response_code_details": x.UC_DETAILS, "authority": PROXY_HOST,
                  "upstream_cluster": "PassthroughCluster", "route_name": "allow_any"},
                 every=True), "logs.label_proxy")
_nr = expect("nr-filter-chain", "Prometheus' sidecar logs only `0 NR filter_chain_not_found` "
             "for connections from the label proxy's pod to :9090: no request reached Prometheus",
             x.server_only_nr, "logs.prometheus")
_retried = expect("client-retried", "Grafana's sidecar retried the relayed 503 twice on route "
                  "`default` (Istio's default retry policy: retriable-status-codes 503) and logs "
                  "503 URX; 3 UC lines at the label proxy's sidecar",
                  x.client_sidecar_retried, "logs.grafana", "logs.label_proxy")
_uc_series = expect("uc-series", "the label proxy's sidecar counts istio_requests_total "
                    "{reporter=source, destination_service_name=PassthroughCluster, "
                    "response_code=503, response_flags=UC}",
                    x.series_present("label_proxy", "istio_requests_total",
                                     {"reporter": "source",
                                      "destination_service_name": "PassthroughCluster",
                                      "response_code": "503", "response_flags": "UC"},
                                     ("destination_service_name", "destination_service",
                                      "response_code", "response_flags")), "metrics.label_proxy")
_no_server_requests = expect("no-server-requests", "Prometheus' sidecar counts no request "
                             "(no istio_requests_total{reporter=destination})",
                             x.no_request_series("prometheus", "destination"), "metrics.prometheus")
_clear = expect("plaintext-on-wire", "the request crosses node-2's link readable: "
                f"`GET /api/v1/query` with `Host: {PROXY_HOST}` in clear",
                x.plaintext_on_wire, "wire")
_closed = expect("closed-on-wire", "Prometheus' side of that connection sends no byte back, "
                 "only FIN/RST", x.closed_without_reply, "wire")
_explicit_http = expect("explicit-http-config", "the label proxy's sidecar config for :9090 is "
                        "the explicit-HTTP listener 0.0.0.0_9090 → route \"9090\" with the "
                        "catch-all allow_any", x.explicit_http_listener, "proxy_config")


def _mtls_http(host: str, host_words: str) -> tuple:
    """Expectations of a fixed HTTP hop: route default to the service's cluster, over mTLS."""
    return (
        _answered,
        expect("route-default", f"the label proxy's sidecar logs its hop as 200, authority "
               f"{host_words}, route `default`, upstream cluster {CLUSTER}",
               x.hop_logged({"response_code": "200", "authority": host, "route_name": "default",
                             "upstream_cluster": CLUSTER}), "logs.label_proxy"),
        expect("server-mtls", "Prometheus' sidecar logs the request as 200 on inbound|9090|| "
               f"with SNI outbound_.9090_._.{FQDN}",
               x.server_logged({"response_code": "200", "upstream_cluster": "inbound|9090||",
                                "requested_server_name": f"outbound_.9090_._.{FQDN}",
                                "route_name": "default"}), "logs.prometheus"),
        expect("mutual-tls-series", "Prometheus' sidecar counts istio_requests_total"
               "{reporter=destination, connection_security_policy=mutual_tls, "
               f"source_principal={SRC_PRINCIPAL}, response_code=200}}",
               x.series_present("prometheus", "istio_requests_total",
                                {"reporter": "destination",
                                 "connection_security_policy": "mutual_tls",
                                 "source_principal": SRC_PRINCIPAL, "response_code": "200"},
                                ("connection_security_policy", "source_principal",
                                 "response_code")), "metrics.prometheus"),
        expect("tls-on-wire", "only TLS crosses node-2's link: a ClientHello with SNI "
               f"outbound_.9090_._.{FQDN}, no request or answer readable",
               x.tls_only_on_wire, "wire"),
        expect("alpn-http", "the ClientHello offers ALPN istio-http/1.1 first (§D3)",
               x.alpn_offered("istio-http/1.1"), "wire"),
    )


VARIANTS = (
    Variant(
        "permissive", "PERMISSIVE (no PeerAuthentication): the Host the proxy kept sends its "
        "hop through allow_any",
        Outcome("works", "Grafana gets its answer, but the label proxy → Prometheus hop is "
                "PassthroughCluster in plaintext, not mTLS"),
        (_answered,
         expect("passthrough", f"the label proxy's sidecar logs its hop as 200, authority "
                f"{PROXY_HOST}, upstream cluster PassthroughCluster, route allow_any",
                x.hop_logged({"response_code": "200", "authority": PROXY_HOST,
                              "upstream_cluster": "PassthroughCluster",
                              "route_name": "allow_any"}), "logs.label_proxy"),
         expect("server-plaintext", "Prometheus' sidecar logs the request as 200 on "
                "inbound|9090|| with no SNI: it arrived in plaintext",
                x.server_logged({"response_code": "200", "upstream_cluster": "inbound|9090||",
                                 "requested_server_name": None}), "logs.prometheus"),
         expect("csp-none", "Prometheus' sidecar counts istio_requests_total{reporter="
                "destination, connection_security_policy=none, response_code=200}",
                x.series_present("prometheus", "istio_requests_total",
                                 {"reporter": "destination", "connection_security_policy": "none",
                                  "response_code": "200"},
                                 ("connection_security_policy", "response_code")),
                "metrics.prometheus"),
         _clear,
         expect("answer-in-clear", "Prometheus' answer crosses back readable (HTTP/1.1 200, "
                '"resultType")', x.answer_in_clear, "wire")),
        _permissive),
    Variant(
        "strict", "mesh-wide STRICT, as in the report",
        Outcome("reproduced", "istio#55472: 503 `upstream connect error or disconnect/reset "
                "before headers. reset reason: connection termination`"),
        (_503, _passthrough_uc, _nr, _retried, _uc_series, _no_server_requests, _clear,
         _closed, _explicit_http),
        _strict),
    Variant(
        "annotation", f"STRICT + the suggested Service annotation `{x.ANNOTATION}: tcp`, "
        "which does not exist in Istio",
        Outcome("broken", f"still 503: Istio has no `{x.ANNOTATION}` annotation; the API server "
                "keeps it, istiod ignores it (`istioctl analyze` would say IST0108 Unknown "
                "annotation)"),
        (expect("annotated", f"the Service carries `{x.ANNOTATION}: tcp` (the variant's input)",
                x.annotation_declared, "declared.service"),
         _explicit_http, _503, _passthrough_uc, _nr, _clear),
        changes.chain(_strict, _annotated)),
    Variant(
        "fix-rewrite-host", "STRICT + the label proxy started with --rewrite-host-header-to "
        f"{FQDN}:{PROM_PORT} (prom-label-proxy#383)",
        Outcome("fixed", "the Host names Prometheus' Service: route default, mTLS end to end"),
        _mtls_http(f"{FQDN}:{PROM_PORT}", f"{FQDN}:{PROM_PORT} (rewritten)"),
        changes.chain(_strict, _rewrite)),
    Variant(
        "fix-app-protocol-tcp", "STRICT + Prometheus' Service port declared appProtocol: tcp "
        "(kept name http-web: appProtocol wins)",
        Outcome("fixed", "the hop is TCP-proxied by destination IP:port over mTLS; the Host no "
                "longer matters"),
        (_answered,
         expect("tcp-proxy", f"the label proxy's sidecar logs its hop as a TCP connection "
                f"(\"- - -\") to {CLUSTER}, no route",
                x.hop_logged({"method": None, "response_flags": None,
                              "upstream_cluster": CLUSTER, "route_name": None}),
                "logs.label_proxy"),
         expect("server-tcp-mtls", "Prometheus' sidecar logs a TCP connection on inbound|9090|| "
                f"with SNI outbound_.9090_._.{FQDN}",
                x.server_logged({"method": None, "upstream_cluster": "inbound|9090||",
                                 "requested_server_name": f"outbound_.9090_._.{FQDN}"}),
                "logs.prometheus"),
         expect("tcp-mtls-series", "Prometheus' sidecar counts istio_tcp_connections_opened_total"
                "{reporter=destination, connection_security_policy=mutual_tls}, and no HTTP "
                "request series (TCP chains have no istio_requests_total)",
                lambda ev: _both(x.series_present(
                    "prometheus", "istio_tcp_connections_opened_total",
                    {"reporter": "destination", "connection_security_policy": "mutual_tls"},
                    ("connection_security_policy", "source_principal"))(ev),
                    x.no_request_series("prometheus", "destination")(ev)),
                "metrics.prometheus"),
         expect("tls-on-wire", "only TLS crosses node-2's link: a ClientHello with SNI "
                f"outbound_.9090_._.{FQDN}, no request or answer readable",
                x.tls_only_on_wire, "wire"),
         expect("alpn-tcp", "the ClientHello offers ALPN istio-peer-exchange first (§D3, TCP)",
                x.alpn_offered("istio-peer-exchange"), "wire")),
        changes.chain(_strict, _tcp)),
    Variant(
        "fix-unnamed-port", "STRICT + Prometheus' Service port left unnamed (protocol "
        "auto-detected)",
        Outcome("fixed", "the sniffed route's only virtual host matches any Host: the kept "
                "Host still reaches Prometheus, over mTLS"),
        (expect("sniffed-config", f"the label proxy's sidecar has route config {FQDN}:{PROM_PORT} "
                "with one virtual host, domains [*], and no route config \"9090\"",
                x.sniffed_route, "proxy_config"),
         *_mtls_http(PROXY_HOST, f"{PROXY_HOST} (the kept Host)")),
        changes.chain(_strict, _unnamed)),
)


def _both(a: tuple[bool, str], b: tuple[bool, str]) -> tuple[bool, str]:
    return a[0] and b[0], f"{a[1]}; {b[1]}"


LAB = Lab(name="strict-host-header",
          title="STRICT mTLS through a label proxy (istio#55472, prom-label-proxy#273)",
          folder=Path(__file__).parent, variants=VARIANTS, traffic=traffic, sections=sections)
