"""The checks the variants are judged by. Each returns (held, what was seen). Pure.

What each one reads: curl's exit code, status and body; the sidecars' access-log fields
(Istio's TEXT format: response code, flags, details, upstream cluster, route name,
authority, SNI); the istio_* series their :15020 serves; the segments on node-2's link;
the label proxy's sidecar config for :9090 (istiod's push, as `netlab proxy-config`
prints it); and, for the annotation, the Service as the variant declared it.

The expected values are Envoy's and istiod's (mesh-facts-2 §D1–D5, §E), never netlab's
previous output: the 95-byte body of istio#55472, `UC`, `PassthroughCluster`,
`allow_any`, `NR filter_chain_not_found`, route `default`, `outbound|9090||<fqdn>`.
"""

from __future__ import annotations

from typing import Any, Callable

from netlab.labs.framework import Evidence, dig

Result = tuple[bool, str]
Check = Callable[[Evidence], Result]

BODY_95 = ("upstream connect error or disconnect/reset before headers. "
           "reset reason: connection termination")
UC_DETAILS = "upstream_reset_before_response_started{connection_termination}"
ANNOTATION = "networking.istio.io/service-protocol"
PROXY_HOST = "prom-label-proxy.monitoring:8080"  # the Host Grafana sends, which the proxy keeps


# -- the client -----------------------------------------------------------------------------

def _client(ev: Evidence) -> str:
    body = (dig(ev, "client.body", "") or "").replace("\n", " ")
    return (f"curl exit {dig(ev, 'client.exit_code')}, HTTP {dig(ev, 'client.http_code') or '-'}, "
            f"{dig(ev, 'client.body_bytes')}-byte body {body[:120]!r}"
            + (f", stderr {dig(ev, 'client.stderr')!r}" if dig(ev, "client.stderr") else ""))


def prometheus_answered(ev: Evidence) -> Result:
    """Prometheus' own API answer: a successful instant query."""
    body = dig(ev, "client.body", "") or ""
    return (dig(ev, "client.exit_code") == 0 and dig(ev, "client.http_code") == "200"
            and '"status":"success"' in body and '"resultType":"vector"' in body), _client(ev)


def got_503_95(ev: Evidence) -> Result:
    body = dig(ev, "client.body", "")
    return (dig(ev, "client.exit_code") == 0 and dig(ev, "client.http_code") == "503"
            and body == BODY_95 and dig(ev, "client.body_bytes") == 95), _client(ev)


# -- access logs ----------------------------------------------------------------------------

def _short(x: dict[str, Any]) -> str:
    req = f"{x.get('method')} {x.get('path')}" if x.get("method") else "TCP"
    return (f"[{req} {x.get('response_code')} {x.get('response_flags') or '-'} "
            f"{x.get('response_code_details') or '-'} authority={x.get('authority') or '-'} "
            f"cluster={x.get('upstream_cluster') or '-'} route={x.get('route_name') or '-'} "
            f"sni={x.get('requested_server_name') or '-'}]")


def _lines(ev: Evidence, who: str) -> list[dict[str, Any]]:
    return list(dig(ev, f"logs.{who}", []) or [])


def hop(ev: Evidence) -> list[dict[str, Any]]:
    """The label proxy's sidecar's lines for its outbound connections to Prometheus' port."""
    port = f":{dig(ev, 'port')}"
    return [x for x in _lines(ev, "label_proxy")
            if str(x.get("downstream_local_address") or "").endswith(port)]


def _seen(lines: list[dict[str, Any]], where: str) -> str:
    return (f"{where}: " + ("; ".join(_short(x) for x in lines) if lines else "no line"))


def _fits(x: dict[str, Any], want: dict[str, Any]) -> bool:
    return all((x.get(k) == v) if not callable(v) else bool(v(x.get(k))) for k, v in want.items())


def hop_logged(want: dict[str, Any], every: bool = False) -> Check:
    """The label proxy's sidecar logged its hop to :9090 with these fields (on some line,
    or `every` line)."""
    def check(ev: Evidence) -> Result:
        lines = hop(ev)
        fits = [_fits(x, want) for x in lines]
        held = bool(lines) and (all(fits) if every else any(fits))
        return held, _seen(lines, "label proxy's sidecar, outbound to :9090")
    return check


def server_logged(want: dict[str, Any]) -> Check:
    """Prometheus' sidecar logged a line with these fields."""
    def check(ev: Evidence) -> Result:
        lines = _lines(ev, "prometheus")
        return any(_fits(x, want) for x in lines), _seen(lines, "Prometheus' sidecar")
    return check


def server_only_nr(ev: Evidence) -> Result:
    """Every line of Prometheus' sidecar is the listener's NR filter_chain_not_found from the
    label proxy's pod to Prometheus' port: no request reached Prometheus."""
    lines = _lines(ev, "prometheus")
    want = {"response_code": "0", "response_flags": "NR",
            "response_code_details": "filter_chain_not_found", "upstream_cluster": None,
            "downstream_local_address": f"{dig(ev, 'pods.prometheus.ip')}:{dig(ev, 'port')}",
            "downstream_remote_address": lambda a: str(a).startswith(
                f"{dig(ev, 'pods.label_proxy.ip')}:")}
    return bool(lines) and all(_fits(x, want) for x in lines), _seen(lines, "Prometheus' sidecar")


def client_sidecar_retried(ev: Evidence) -> Result:
    """Grafana's sidecar got the relayed 503 on route `default`, whose Istio default retry
    policy retries 503 twice (URX): three attempts, each a UC at the label proxy's sidecar."""
    mine = [x for x in _lines(ev, "grafana") if x.get("authority") == PROXY_HOST]
    ucs = [x for x in hop(ev) if x.get("response_flags") == "UC"]
    held = (any(x.get("response_code") == "503" and "URX" in str(x.get("response_flags"))
                and x.get("route_name") == "default" for x in mine) and len(ucs) == 3)
    return held, f"{_seen(mine, 'Grafana sidecar')}; {len(ucs)} UC line(s) at the label proxy's sidecar"


# -- metrics ----------------------------------------------------------------------------------

def _series(ev: Evidence, who: str, name: str) -> list[dict[str, Any]]:
    return [s for s in dig(ev, f"metrics.{who}", []) or [] if s["name"] == name]


def _series_text(series: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    if not series:
        return "no series"
    return "; ".join("{" + ", ".join(f"{k}={s['labels'].get(k)!r}" for k in keys
                                     if k in s["labels"]) + f"}} {s['value']:g}" for s in series)


def series_present(who: str, name: str, labels: dict[str, str], keys: tuple[str, ...]) -> Check:
    """`who`'s sidecar serves `name` with these labels and a value > 0."""
    def check(ev: Evidence) -> Result:
        series = _series(ev, who, name)
        held = any(s["value"] > 0 and all(s["labels"].get(k) == v for k, v in labels.items())
                   for s in series)
        return held, f"{name} at {who.replace('_', ' ')}'s sidecar: {_series_text(series, keys)}"
    return check


def no_request_series(who: str, reporter: str) -> Check:
    def check(ev: Evidence) -> Result:
        series = [s for s in _series(ev, who, "istio_requests_total")
                  if s["labels"].get("reporter") == reporter]
        return not series, (f"istio_requests_total{{reporter={reporter!r}}} at "
                            f"{who.replace('_', ' ')}'s sidecar: "
                            f"{_series_text(series, ('response_code', 'connection_security_policy'))}")
    return check


# -- the wire ---------------------------------------------------------------------------------

def _wire(ev: Evidence) -> str:
    w = ev.get("wire", {})
    hellos = ", ".join(f"ClientHello SNI {h.get('sni')!r} ALPN {h.get('alpn')}"
                       for h in w.get("client_hellos", [])) or "no ClientHello"
    clear = "; ".join(r.split("\r\n")[0] for r in w.get("requests_in_clear", [])) or "none"
    return (f"on the node link: {w.get('segments_to_server', 0)} segment(s) to "
            f"Prometheus' :{dig(ev, 'port')} ({w.get('bytes_to_server', 0)} payload bytes), "
            f"{w.get('segments_from_server', 0)} back ({w.get('bytes_from_server', 0)} bytes, "
            f"flags {w.get('server_flags')}); requests in clear: {clear}; "
            f"replies in clear: {w.get('replies_in_clear') or 'none'}; {hellos}")


def plaintext_on_wire(ev: Evidence) -> Result:
    """The request crossed the node link readable: the query, and the Host the proxy kept."""
    w = ev.get("wire", {})
    reqs = w.get("requests_in_clear", [])
    held = bool(w.get("query_in_clear")) and any(f"Host: {PROXY_HOST}" in r or
                                                 f"host: {PROXY_HOST}" in r for r in reqs)
    return held, _wire(ev)


def answer_in_clear(ev: Evidence) -> Result:
    w = ev.get("wire", {})
    return bool(w.get("answer_in_clear")) and bool(w.get("replies_in_clear")), _wire(ev)


def closed_without_reply(ev: Evidence) -> Result:
    """Prometheus' side sent no byte back, only a FIN or RST: the connection was closed."""
    w = ev.get("wire", {})
    flags = "".join(w.get("server_flags", []))
    return (w.get("bytes_from_server", -1) == 0 and ("F" in flags or "R" in flags)
            and w.get("segments_to_server", 0) > 0), _wire(ev)


def tls_only_on_wire(ev: Evidence) -> Result:
    """Only TLS: a ClientHello with Istio's SNI for the service, nothing readable."""
    w = ev.get("wire", {})
    sni = dig(ev, "sni")
    held = (any(h.get("sni") == sni for h in w.get("client_hellos", []))
            and not w.get("requests_in_clear") and not w.get("replies_in_clear")
            and not w.get("query_in_clear") and not w.get("answer_in_clear"))
    return held, _wire(ev)


def alpn_offered(first: str) -> Check:
    """The client sidecar's ClientHello offers ALPN `first` first (§D3: istio-http/1.1 for
    HTTP, istio-peer-exchange for TCP)."""
    def check(ev: Evidence) -> Result:
        hellos = dig(ev, "wire.client_hellos", []) or []
        return any((h.get("alpn") or [None])[0] == first for h in hellos), _wire(ev)
    return check


# -- config and declared input ---------------------------------------------------------------

def _config(ev: Evidence) -> str:
    rows = dig(ev, "proxy_config.listeners", []) or []
    rcs = dig(ev, "proxy_config.route_configs", []) or []
    return ("listeners for :9090: " + ("; ".join(" ".join(r) for r in rows) or "none")
            + "; route configs: " + ("; ".join(
                f"{rc['name']} → " + ", ".join(f"{vh['name']} {vh['domains']}"
                                              for vh in rc["virtual_hosts"]) for rc in rcs)
                or "none"))


def explicit_http_listener(ev: Evidence) -> Result:
    """The label proxy's sidecar still has the shared explicit-HTTP listener 0.0.0.0_9090 →
    route "9090" whose catch-all is allow_any: what an http-* port gets (§D1)."""
    rows = dig(ev, "proxy_config.listeners", []) or []
    rcs = {rc["name"]: rc for rc in dig(ev, "proxy_config.route_configs", []) or []}
    port = str(dig(ev, "port"))
    held = (any(r[0] == "0.0.0.0" and r[3] == f"Route: {port}" for r in rows)
            and any(vh["name"] == "allow_any" and vh["domains"] == ["*"]
                    for vh in rcs.get(port, {}).get("virtual_hosts", [])))
    return held, _config(ev)


def sniffed_route(ev: Evidence) -> Result:
    """An auto-detected port: a per-service listener whose route config `<fqdn>:<port>` has
    one virtual host with domains `*` and no allow_any (§D1 getVirtualHostsForSniffedServicePort)."""
    name = f"{dig(ev, 'fqdn')}:{dig(ev, 'port')}"
    rcs = {rc["name"]: rc for rc in dig(ev, "proxy_config.route_configs", []) or []}
    vhs = rcs.get(name, {}).get("virtual_hosts", [])
    held = (len(vhs) == 1 and vhs[0]["domains"] == ["*"]
            and str(dig(ev, "port")) not in rcs)
    return held, _config(ev)


def annotation_declared(ev: Evidence) -> Result:
    ann = dig(ev, "declared.service.annotations", {}) or {}
    return ann.get(ANNOTATION) == "tcp", (f"Service monitoring/prometheus annotations: {ann}; "
                                         f"ports: {dig(ev, 'declared.service.ports')}")
