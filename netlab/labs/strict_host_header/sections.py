"""The lab's report sections: the client's answer, each sidecar's access-log lines with the
deciding fields marked, the label proxy's sidecar config for :9090, the series that count
the hop, and what crossed node-2's link."""

from __future__ import annotations

from typing import Any, Sequence

from netlab.labs.framework import VariantResult
from netlab.labs.sections import Section, Text

WHO = (("grafana", "Grafana's sidecar (client)"),
       ("label_proxy", "the label proxy's sidecar"),
       ("prometheus", "Prometheus' sidecar (server)"))
LOG_NOTES = {
    "PassthroughCluster": "no virtual host for the kept Host: plaintext to the original "
                          "destination (allow_any)",
    "filter_chain_not_found": "STRICT: no plaintext filter chain, the connection is closed",
    "outbound|9090||": "the service's own cluster: Istio mTLS to the endpoint",
    " URX ": "retries exhausted (the default retry policy retries 503)",
}


def _segment(s: dict[str, Any], hellos: list[dict[str, Any]]) -> str:
    text = s.get("payload", "")
    head = f"{s['saddr']}:{s['sport']} → {s['daddr']}:{s['dport']} [{s['flags']}] {s['bytes']} B: "
    readable = sum(c.isprintable() or c in "\r\n" for c in text)
    if text and readable / len(text) > 0.95:
        return head + repr(text.split("\r\n\r\n")[0])
    if text[:1] == "\x16" and hellos:
        h = hellos[0]
        return head + f"TLS handshake (ClientHello SNI {h.get('sni')}, ALPN {h.get('alpn')})"
    return head + ("TLS record, not readable" if text[:1] in ("\x14", "\x15", "\x16", "\x17")
                   else "not readable")


def _series(ev: dict[str, Any], who: str) -> list[str]:
    out = []
    for s in (ev.get("metrics") or {}).get(who, []):
        labels = ", ".join(f"{k}={v!r}" for k, v in s["labels"].items())
        out.append(f"{s['name']}{{{labels}}} {s['value']:g}")
    return out


def sections(r: VariantResult) -> Sequence[Section]:
    ev = r.evidence
    if "pods" not in ev:
        return ()  # the variant failed before its instance was up: nothing was observed
    client = ev.get("client") or {}
    out: list[Section] = [
        Text("Grafana's query", (f"$ curl -sS {client.get('url')}",
                                 f"exit {client.get('exit_code')}, HTTP "
                                 f"{client.get('http_code') or '-'}, "
                                 f"{client.get('body_bytes')} bytes:",
                                 *(client.get("body") or "").splitlines(),
                                 *(client.get("stderr") or "").splitlines())),
    ]
    for key, title in WHO:
        lines = tuple(x["line"] for x in (ev.get("logs") or {}).get(key, []))
        out.append(Text(f"Access log: {title}", lines or ("(no line)",), LOG_NOTES))
    pc = ev.get("proxy_config") or {}
    out.append(Text("netlab proxy-config: the label proxy's sidecar, port 9090",
                    tuple(" ".join(r) for r in pc.get("listeners", []))
                    + tuple(f"route config {rc['name']!r}: " + "; ".join(
                        f"{vh['name']} {vh['domains']} → {vh['routes']}"
                        for vh in rc["virtual_hosts"]) for rc in pc.get("route_configs", [])),
                    {"allow_any": "the catch-all that takes any other Host",
                     "['*']": "any Host matches"},
                    note="What istiod made of Prometheus' Service port."))
    out.append(Text("istio_* series (:15020)",
                    tuple(f"label proxy: {s}" for s in _series(ev, "label_proxy"))
                    + tuple(f"prometheus: {s}" for s in _series(ev, "prometheus")),
                    {"PassthroughCluster": "counted as passthrough",
                     "'mutual_tls'": "mTLS, as the server saw it"}))
    w = ev.get("wire") or {}
    declared = ev.get("declared") or {}
    out.append(Text(f"On {(ev.get('link') or {}).get('node')}'s link (AF_PACKET, port 9090)",
                    tuple(_segment(s, w.get("client_hellos", [])) for s in w.get("samples", []))
                    or ("(no segment with payload)",),
                    {"GET /api": "the request, readable", "HTTP/1.1 200": "the answer, readable",
                     "ClientHello": "Istio mTLS"}))
    out.append(Text("The variant's input", (
        f"PeerAuthentication: {declared.get('peer_authentications') or 'none (PERMISSIVE)'}",
        f"Service monitoring/prometheus ports: {(declared.get('service') or {}).get('ports')}",
        f"Service annotations: {(declared.get('service') or {}).get('annotations') or 'none'}",
        f"label proxy args: {declared.get('label_proxy_args')}")))
    return out
