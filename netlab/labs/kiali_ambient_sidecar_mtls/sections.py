"""The report: both versions' graphs side by side, then the evidence that says why.

Every picture is drawn from the evidence alone (the graphs' JSON) with netlab's Kiali
renderer; the same run fed both versions.
"""

from __future__ import annotations

from typing import Any, Sequence

from netlab.labs import kiali_views as kv
from netlab.labs.framework import VariantResult, dig
from netlab.labs.kiali_ambient_sidecar_mtls.traffic import EDGES, VERSIONS
from netlab.labs.sections import Section, Text

HEADINGS = {"2.0": "Kiali 2.0 (before kiali#7879)", "2.1": "Kiali 2.1 (kiali#7879)"}
TELLING = ("reporter", "app", "pod", "source_workload_namespace", "source_workload", "source_canonical_service",
           "source_principal", "destination_workload", "destination_service", "connection_security_policy")


def _series_line(s: dict[str, Any]) -> str:
    labels = ",".join(f'{k}="{s[k]}"' for k in TELLING if k in s)
    return f"{s['__name__']}{{{labels}}} {s['value']:g}"


def sections(result: VariantResult) -> Sequence[Section]:
    ev = result.evidence
    k = ev.get("kiali", {})
    if not k.get("graphs"):
        return ()
    out: list[Section] = []
    lines = []
    for v in VERSIONS:
        for pair, (src, dst) in EDGES.items():
            e = kv.edge_between(k["edges"][v], src, dst)
            lines.append(f"Kiali {v} {pair}: " + (kv.edge_text(e) if e else "no edge"))
    out.append(kv.graph_figure(
        f"The graph of ns-a and ns-b, Kiali {' and '.join(VERSIONS)} side by side (Display → Security on)",
        [(HEADINGS[v], k["graphs"][v]) for v in VERSIONS], True, lines,
        "Same Prometheus, same instant. Look at ns-a/sleep → ratings (ns-b): no padlock in 2.0, a padlock "
        f"in 2.1. The controls are locked in both. Rates are over the graph's {k['duration']} s window "
        "(\"Last 1m\" in Kiali's duration menu)."))
    sq = []
    marks = {}
    for v in VERSIONS:
        for q in k["security_queries"][v]:
            line = f"Kiali {v} {q['purpose']} → {q['series']} series: {q['promql']}"
            sq.append(line)
            if 'app="ztunnel",reporter="source"' in q["promql"]:
                marks[line] = "kiali#7879: ztunnel's source-reported TCP series"
    out.append(Text("The securityPolicy appender's queries", tuple(sq), marks,
                    "Kiali decides the lock from these answers only; 2.0 never asks a reporter=\"source\" series."))
    ratings = dig(ev, "pods.ratings.ip")
    about = [s for s in ev.get("series", []) if s.get("destination_workload") == "ratings-v1"]
    raw_marks = {}
    raw = []
    for s in about:
        line = _series_line(s)
        raw.append(line)
        if s.get("source_workload") == "unknown":
            raw_marks[line] = "the sidecar's: source unknown (no peer metadata over HBONE) → dropped, keys no edge"
        elif s.get("app") == "ztunnel" and s.get("reporter") == "source" and s.get("source_workload") == "sleep":
            raw_marks[line] = "ztunnel's: mutual_tls, the only series of the edge; 2.1 reads it"
    out.append(Text("Series about ratings-v1 in the lab's Prometheus", tuple(raw), raw_marks,
                    "mesh-facts-2 §A4: ztunnel reaches the sidecar over HBONE; the sidecar reports "
                    "reporter=\"destination\" with mutual_tls but cannot name the source workload."))
    w = ev.get("wire", {})
    log = [", ".join(f"{key}={x.get(key)}" for key in ("direction", "src.workload", "src.identity", "dst.addr",
                                                          "dst.hbone_addr", "dst.identity", "bytes_sent", "bytes_recv"))
           for x in ev.get("ztunnel_log", [])]
    wire = [f"server {w.get('server')} on {w.get('node')} {w.get('ifname')}: ports {w.get('server_ports')}, "
            f"{w.get('segments')} segments, {w.get('tls_handshakes_to_server')} TLS handshake record(s), "
            f"request path {w.get('marker')!r} in clear: {w.get('marker_seen')}"]
    wire += [f"  {s['saddr']}:{s['sport']} -> {s['daddr']}:{s['dport']} [{s['flags']}] {s['bytes']} bytes, "
             f"first bytes {s['payload'][:6].encode('latin-1').hex(' ')}" for s in w.get("samples", [])]
    out.append(Text("What ztunnel logged, and what crossed the wire", tuple(log + wire),
                    {f"{ratings}:15008": "HBONE: mTLS with both identities"} if ratings else {},
                    "The traffic is mTLS whatever Kiali draws: ztunnel logs both SPIFFE identities, and the "
                    "server node's link carries only TLS to :15008."))
    return out
