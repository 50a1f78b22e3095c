"""Checks over the evidence: what each Kiali version drew, and the wire, log and series behind it.

"Locked" means what Kiali's UI draws (GraphStyles.ts): Display → Security on, the edge has
traffic, and `isMTLS > 0`.
"""

from __future__ import annotations

from typing import Any, Callable

from netlab.labs.framework import Evidence, dig
from netlab.labs.kiali_ambient_sidecar_mtls.traffic import EDGES

Check = Callable[[Evidence], tuple[bool, str]]
TD = "spiffe://cluster.local/ns"
SLEEP_ID, RATINGS_ID = f"{TD}/ns-a/sa/sleep", f"{TD}/ns-b/sa/bookinfo-ratings"
CONTROLS = ("ambient->ambient", "sidecar->ambient", "sidecar->sidecar")


def edge(ev: Evidence, version: str, pair: str) -> dict[str, Any] | None:
    src, dst = EDGES[pair]
    edges = dig(ev, "kiali.edges", {}).get(version, [])  # versions hold dots: no dotted path
    return next((e for e in edges if e["source"] == src and e["target"] == dst), None)


def _say(e: dict[str, Any] | None, pair: str) -> str:
    if e is None:
        return f"{pair}: no edge {EDGES[pair][0]} -> {EDGES[pair][1]}"
    lock = "lock" if e["lock"] else "no lock"
    return f"{pair}: {e['source']} -> {e['target']} {e['rate']} {e['protocol']}, isMTLS {e['isMTLS']}, {lock}"


def locked(version: str, pair: str, want: bool) -> Check:
    def check(ev: Evidence) -> tuple[bool, str]:
        e = edge(ev, version, pair)
        if e is None:
            return False, _say(e, pair)
        drawn = e["rate"] is not None  # Kiali's hasTraffic: the edge has rates (its query saw rate > 0)
        ok = drawn and e["lock"] is want and ((e["isMTLS"] is None) if not want else float(e["isMTLS"]) > 0)
        return ok, _say(e, pair)
    return check


def controls_locked(version: str) -> Check:
    def check(ev: Evidence) -> tuple[bool, str]:
        results = [locked(version, p, True)(ev) for p in CONTROLS]
        return all(ok for ok, _ in results), "; ".join(seen for _, seen in results)
    return check


def clients_answered(ev: Evidence) -> tuple[bool, str]:
    calls = [(pair, c) for pair, cs in ev.get("clients", {}).items() for c in cs]
    bad = [f"{pair} {c['url']}: exit {c['exit_code']} status {c['http_code']} {c['stderr']}"
           for pair, c in calls if c["exit_code"] != 0 or c["http_code"] != "200"]
    return bool(calls) and not bad, "; ".join(bad) or f"{len(calls)} requests, every one 200"


def ztunnel_logged_mtls(ev: Evidence) -> tuple[bool, str]:
    """ztunnel's "connection complete" for sleep → ratings: HBONE to :15008, both identities."""
    ratings = dig(ev, "pods.ratings.ip")
    lines = [x for x in ev.get("ztunnel_log", []) if x.get("direction") == "outbound"]
    hit = next((x for x in lines if x.get("dst.addr") == f"{ratings}:15008"
                and x.get("dst.hbone_addr") == f"{ratings}:9080"
                and x.get("src.identity") == SLEEP_ID and x.get("dst.identity") == RATINGS_ID), None)
    if hit is None:
        return False, f"{len(lines)} outbound lines, none with both identities: {lines[:2]}"
    keys = ("src.workload", "src.identity", "dst.addr", "dst.hbone_addr", "dst.workload", "dst.identity")
    return True, ", ".join(f"{k}={hit.get(k)}" for k in keys)


def only_tls_on_wire(ev: Evidence) -> tuple[bool, str]:
    w = ev.get("wire", {})
    ok = (w.get("server_ports") == [15008] and w.get("tls_handshakes_to_server", 0) >= 1
          and w.get("payload_segments_to_server", 0) == w.get("tls_records_to_server", -1)
          and not w.get("marker_seen") and not w.get("http_seen"))
    return ok, (f"on {w.get('node')} {w.get('ifname')}: {w.get('segments')} segments to/from {w.get('server')}, "
                f"ports {w.get('server_ports')}, {w.get('tls_handshakes_to_server')} TLS handshake record(s), "
                f"{w.get('tls_records_to_server')}/{w.get('payload_segments_to_server')} payloads start a TLS "
                f"record, request path in clear: {w.get('marker_seen')}, 'HTTP/1.1' in clear: {w.get('http_seen')}")


def _series(ev: Evidence, **labels: str) -> list[dict[str, Any]]:
    return [s for s in ev.get("series", []) if all(s.get(k) == v for k, v in labels.items())]


def series_explain(ev: Evidence) -> tuple[bool, str]:
    """§A4: the sidecar's destination series has an unknown source (with sleep's principal
    and mutual_tls); ztunnel's source series is mutual_tls with both workloads; nobody
    reports sleep → ratings-v1 as destination with sleep as source."""
    sidecar = [s for s in _series(ev, reporter="destination", destination_workload="ratings-v1",
                                  source_principal=SLEEP_ID) if s["__name__"] == "istio_requests_total"]
    ztunnel = _series(ev, app="ztunnel", reporter="source", source_workload="sleep",
                      destination_workload="ratings-v1")
    known_dest = _series(ev, reporter="destination", source_workload="sleep", destination_workload="ratings-v1")
    ok = (bool(sidecar) and all(s.get("source_workload") == "unknown" and s.get("source_canonical_service") == "unknown"
                                and s.get("connection_security_policy") == "mutual_tls" for s in sidecar)
          and bool(ztunnel) and all(s.get("connection_security_policy") == "mutual_tls"
                                    and s.get("destination_principal") == RATINGS_ID for s in ztunnel)
          and not known_dest)
    def one(s: dict[str, Any]) -> str:
        return (f"{s['__name__']}{{reporter={s.get('reporter')},app={s.get('app')},"
                f"source_workload={s.get('source_workload')},connection_security_policy="
                f"{s.get('connection_security_policy')}}}")
    return ok, (f"sidecar: {'; '.join(one(s) for s in sidecar) or 'none'} | ztunnel: "
                f"{'; '.join(one(s) for s in ztunnel) or 'none'} | destination series with source sleep: "
                f"{len(known_dest)}")


def security_queries(version: str, asks_ztunnel_source: bool) -> Check:
    """Whether the securityPolicy appender asked ztunnel's reporter="source" TCP series
    (kiali#7879), and what that query returned."""
    def check(ev: Evidence) -> tuple[bool, str]:
        qs = dig(ev, "kiali.security_queries", {}).get(version, [])
        hits = [q for q in qs if 'app="ztunnel",reporter="source"' in q["promql"]]
        if asks_ztunnel_source:
            inside_a = [q for q in hits if 'reporter="source",source_workload_namespace="ns-a"' in q["promql"]]
            ok = bool(inside_a) and all(q["series"] > 0 for q in inside_a)
            return ok, "; ".join(f"{q['purpose']}: {q['series']} series" for q in hits) or "not asked"
        return bool(qs) and not hits, (f"{len(qs)} security queries, none asks app=\"ztunnel\",reporter=\"source\""
                                       if not hits else f"asked: {hits[0]['promql']}")
    return check
