"""Checks over the tour's evidence: each returns (held, what was seen). Pure.

They read what the kernel and the real clients showed (AF_PACKET copies from the node
links, conntrack, curl), the proxies' own access logs and the lab's Prometheus, and
compare with what the Istio page and ztunnel/Envoy's documented behaviour say.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from netlab import mesh
from netlab.dataplane.identity import Identity, IdentityError
from netlab.labs.framework import Evidence, dig
from netlab.observe.witness.match import events_present

RBAC_BODY = "RBAC: access denied"  # Envoy's RBAC filter, 19 bytes (istio.io docs output)
TLS_HANDSHAKE = "1603"  # a TLS record: type 22 (handshake), version 3.x
HTTP_PORTS = (80, 8080)
SPLIT_P = 0.10
SPLIT_SIGMAS = 4.5  # a fair 90/10 split falls outside with probability below 1e-5


def split_range(n: int, p: float = SPLIT_P) -> tuple[int, int]:
    """The binomial tolerance for v2's count: n·p ± 4.5 σ (σ = √(n·p·(1-p)))."""
    sigma = math.sqrt(n * p * (1 - p))
    return max(0, math.ceil(n * p - SPLIT_SIGMAS * sigma)), math.floor(n * p + SPLIT_SIGMAS * sigma)


def spiffe(sa: str, ns: str = "tour") -> str:
    return mesh.spiffe_uri("cluster.local", ns, sa)


def _curl(r: dict[str, Any] | None) -> str:
    if not r:
        return "no curl result"
    codes = Counter(r.get("codes") or [])
    servers = Counter(s for s in r.get("servers") or [] if s)
    out = f"{r['client']}: curl exit {r['exit_code']}, {r['requests']} request(s), codes {dict(codes)}"
    if servers:
        out += f", answered by {dict(servers)}"
    if r.get("stderr"):
        out += f", stderr {r['stderr']!r}"
    return out


def all_ok(r: dict[str, Any] | None, server: str | None = None) -> bool:
    return bool(r) and r["exit_code"] == 0 and r["codes"] == ["200"] * r["requests"] and \
        (server is None or r["servers"] == [server] * r["requests"])


# -- out of mesh ---------------------------------------------------------------------------
def plain_answered(ev: Evidence) -> tuple[bool, str]:
    r = dig(ev, "out_of_mesh.client")
    return all_ok(r, "server-0"), _curl(r)


def plaintext_on_wire(ev: Evidence) -> tuple[bool, str]:
    w = dig(ev, "out_of_mesh.wire", {})
    srv = dig(ev, "out_of_mesh.server_ip")
    to_app = [s for s in w.get("segments", []) if s["daddr"] == srv and s["dport"] in HTTP_PORTS]
    hbone = [s for s in w.get("segments", []) if mesh.HBONE_PORT in (s["sport"], s["dport"])]
    ok = bool(w.get("marker_in_clear")) and bool(to_app) and not hbone
    return ok, (f"W2's link: the request path {dig(ev, 'out_of_mesh.marker')!r} "
                f"{'readable' if w.get('marker_in_clear') else 'NOT readable'} in a segment; "
                f"{len(to_app)} segment(s) to {srv}:8080; {len(hbone)} to or from :15008")


def no_ztunnel_line(ev: Evidence) -> tuple[bool, str]:
    """No ztunnel access-log line in the whole run names the out-of-mesh server."""
    srv = dig(ev, "out_of_mesh.server_ip")
    lines = dig(ev, "out_of_mesh.ztunnel_lines_naming_server", None)
    if lines is None:
        return False, "the run did not record the ztunnel lines"
    return not lines, (f"{len(lines)} ztunnel access-log line(s) name {srv} "
                       f"(of {dig(ev, 'out_of_mesh.ztunnel_lines_in_run')} in the run)")


def no_ztunnel_series(ev: Evidence) -> tuple[bool, str]:
    series = dig(ev, "metrics.out_of_mesh")
    if series is None:
        return False, "no metrics read"
    return not series, (f"Prometheus: {len(series)} istio_tcp_connections_opened_total series with "
                        f"destination_workload_namespace=\"legacy\", read after a scrape that holds "
                        f"the later steps' series")


# -- in mesh, L4 ---------------------------------------------------------------------------
def l4_answered(ev: Evidence) -> tuple[bool, str]:
    cs = dig(ev, "l4.clients", {})
    return (len(cs) == 2 and all(all_ok(r, "s1-0") for r in cs.values()),
            "; ".join(_curl(r) for r in cs.values()))


def _flows(segs: list[dict[str, Any]], src: str, dst: str) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for s in segs:
        if s["saddr"] == src and s["daddr"] == dst:
            out.setdefault(s["sport"], []).append(s)
    return out


def l4_only_tls(ev: Evidence) -> tuple[bool, str]:
    segs = dig(ev, "l4.wire.segments", [])
    s1 = dig(ev, "l4.s1")
    seen, ok = [], len(dig(ev, "l4.client_ips", {})) == 2
    for c, ip in dig(ev, "l4.client_ips", {}).items():
        mine = [s for s in segs if s["saddr"] == ip and s["daddr"] == s1]
        other_ports = sorted({s["dport"] for s in mine} - {mesh.HBONE_PORT})
        firsts = [next((s["head"] for s in flow if s["bytes"]), "") for flow in _flows(segs, ip, s1).values()]
        tls = bool(firsts) and all(h.startswith(TLS_HANDSHAKE) for h in firsts)
        ok &= bool(mine) and not other_ports and tls
        seen.append(f"{c}→S1: {len(mine)} segment(s) on W2's link, ports other than 15008: "
                    f"{other_ports or 'none'}, each connection opens with a TLS handshake record: {tls}")
    clear = bool(dig(ev, "l4.wire.marker_in_clear"))
    return ok and not clear, "; ".join(seen) + f"; request path readable: {clear}"


def l4_pooled(ev: Evidence) -> tuple[bool, str]:
    """One TCP connection (SYN) per identity pair on the wire, N tunnels (log lines) in it."""
    segs, n, s1 = dig(ev, "l4.wire.segments", []), dig(ev, "l4.n"), dig(ev, "l4.s1")
    out_lines, in_lines = dig(ev, "l4.w1_ztunnel", []), dig(ev, "l4.w2_ztunnel", [])
    ok, seen = len(dig(ev, "l4.client_ips", {})) == 2, []
    for c, ip in dig(ev, "l4.client_ips", {}).items():
        syns = [s for s in segs if s["flags"] == "S" and s["saddr"] == ip and s["daddr"] == s1
                and s["dport"] == mesh.HBONE_PORT]
        outs = [x for x in out_lines if x.get("direction") == "outbound" and x.get("src.identity") == spiffe(c)
                and x.get("dst.workload") == "s1-0"]
        ins = [x for x in in_lines if x.get("direction") == "inbound" and x.get("src.identity") == spiffe(c)]
        ok &= len(syns) == 1 and len(outs) == n and len(ins) == n
        seen.append(f"{c}→S1: {n} requests, {len(syns)} TCP connection(s) to :15008 on the wire, "
                    f"{len(outs)} tunnels in W1's ztunnel log, {len(ins)} in W2's")
    return ok, "; ".join(seen)


def l4_identities(ev: Evidence) -> tuple[bool, str]:
    ins = [x for x in dig(ev, "l4.w2_ztunnel", []) if x.get("direction") == "inbound"]
    pairs = Counter((x.get("src.identity"), x.get("dst.identity")) for x in ins)
    want = {(spiffe("c1"), spiffe("s1")), (spiffe("c2"), spiffe("s1"))}
    return set(pairs) == want, "W2's ztunnel logged src.identity → dst.identity: " + \
        ", ".join(f"{a} → {b} ×{k}" for (a, b), k in sorted(pairs.items(), key=str))


def l4_metrics(ev: Evidence) -> tuple[bool, str]:
    series = dig(ev, "metrics.l4", [])
    n = dig(ev, "l4.n")
    got = {(s["metric"].get("reporter"), s["metric"].get("source_workload")): s for s in series}
    ok = all(((rep, c) in got and got[(rep, c)]["value"] == n
              and got[(rep, c)]["metric"].get("connection_security_policy") == "mutual_tls"
              and got[(rep, c)]["metric"].get("source_principal") == spiffe(c))
             for rep in ("source", "destination") for c in ("c1", "c2"))
    return ok, "Prometheus istio_tcp_connections_opened_total: " + ", ".join(
        f"{rep}/{c} {s['metric'].get('connection_security_policy')} ={s['value']:g}"
        for (rep, c), s in sorted(got.items(), key=str))


# -- same node -----------------------------------------------------------------------------
def same_node_answered(ev: Evidence) -> tuple[bool, str]:
    r = dig(ev, "same_node.client")
    return all_ok(r, "s1-0"), _curl(r)


def same_node_off_link(ev: Evidence) -> tuple[bool, str]:
    segs = dig(ev, "same_node.link_segments_of_c3")
    return segs == [], f"{len(segs or [])} segment(s) from or to C3 on either node link"


def same_node_ztunnel_log(ev: Evidence) -> tuple[bool, str]:
    n = dig(ev, "same_node.n")
    lines = dig(ev, "same_node.w2_ztunnel", [])
    outs = [x for x in lines if x.get("direction") == "outbound" and x.get("src.workload") == "c3-0"
            and x.get("dst.workload") == "s1-0" and x.get("dst.hbone_addr")]
    ins = [x for x in lines if x.get("direction") == "inbound" and x.get("src.identity") == spiffe("c3")]
    w1 = [x for x in dig(ev, "same_node.w1_ztunnel", []) if x.get("src.workload") == "c3-0"]
    return (len(outs) == n and len(ins) == n and not w1,
            f"W2's ztunnel: {len(outs)} outbound (c3-0 → s1-0 over HBONE) and {len(ins)} inbound "
            f"line(s) for {n} requests; W1's ztunnel: {len(w1)}")


def same_node_metrics(ev: Evidence) -> tuple[bool, str]:
    n = dig(ev, "same_node.n")
    series = dig(ev, "metrics.same_node", [])
    got = {s["metric"].get("reporter"): s for s in series}
    ok = set(got) == {"source", "destination"} and all(
        s["metric"].get("pod") == "ztunnel-w2" and s["value"] == n for s in got.values())
    return ok, "Prometheus: " + ", ".join(f"reporter={r} from {s['metric'].get('pod')} ={s['value']:g}"
                                          for r, s in sorted(got.items()))


# -- L4 deny -------------------------------------------------------------------------------
def deny_reset(ev: Evidence) -> tuple[bool, str]:
    r = dig(ev, "deny.c2")
    return (bool(r) and r["exit_code"] == 56 and "reset" in r["stderr"].lower()), _curl(r)


def deny_others_served(ev: Evidence) -> tuple[bool, str]:
    r = dig(ev, "deny.c1")
    return all_ok(r, "s1-0"), _curl(r)


def deny_at_ztunnel(ev: Evidence) -> tuple[bool, str]:
    ins = [x for x in dig(ev, "deny.w2_ztunnel", []) if x.get("src.identity") == spiffe("c2")]
    outs = [x for x in dig(ev, "deny.w1_ztunnel", []) if x.get("src.identity") == spiffe("c2")]
    denied = [x for x in ins if "policy rejection" in (x.get("error") or "") and "tour/deny-c2" in x["error"]]
    refused = [x for x in outs if "401" in (x.get("error") or "")]
    return (bool(denied) and bool(refused),
            f"W2's ztunnel (S1's side): {[x.get('error') for x in ins]}; "
            f"W1's ztunnel (C2's side): {[x.get('error') for x in outs]}")


def deny_after_mtls(ev: Evidence) -> tuple[bool, str]:
    segs = dig(ev, "deny.wire.segments", [])
    ip, s1 = dig(ev, "deny.client_ips.c2"), dig(ev, "deny.s1")
    tunnel = [s for s in segs if s["saddr"] == ip and s["daddr"] == s1 and s["dport"] == mesh.HBONE_PORT
              and s["bytes"]]
    plain = [s for s in segs if s["saddr"] == ip and s["dport"] in HTTP_PORTS]
    return (bool(tunnel) and not plain,
            f"C2 → S1: {len(tunnel)} data segment(s) to :15008 on W2's link (the CONNECT reached S1's "
            f"ztunnel over mTLS), {len(plain)} to the app's port")


# -- L7 policy -----------------------------------------------------------------------------
def l7_get(ev: Evidence) -> tuple[bool, str]:
    r = dig(ev, "l7.get")
    return all_ok(r), _curl(r)


def l7_post_403(ev: Evidence) -> tuple[bool, str]:
    r = dig(ev, "l7.post")
    ok = bool(r) and r["exit_code"] == 0 and r["codes"] == ["403"] and r["bodies"] == [RBAC_BODY]
    return ok, _curl(r) + (f", body {r['bodies']!r}" if r else "")


def l7_at_waypoint(ev: Evidence) -> tuple[bool, str]:
    lines = dig(ev, "l7.waypoint_log", [])
    post = [x for x in lines if x.get("method") == "POST" and x.get("path") == "/tour/l7"]
    get = [x for x in lines if x.get("method") == "GET" and x.get("path") == "/tour/l7"]
    ok = (len(post) == 1 and post[0].get("response_code") == "403"
          and (post[0].get("response_code_details") or "").startswith("rbac_access_denied_matched_policy")
          and len(get) == 1 and get[0].get("response_code") == "200")
    return ok, "waypoint access log: " + "; ".join(
        f"{x.get('method')} {x.get('path')} {x.get('response_code')} {x.get('response_code_details')}"
        for x in post + get)


# -- waypoint legs -------------------------------------------------------------------------
def legs_answered(ev: Evidence) -> tuple[bool, str]:
    r = dig(ev, "legs.client")
    return all_ok(r, "echo-v1-0"), _curl(r)


def legs_in_trace(ev: Evidence) -> tuple[bool, str]:
    ips = dig(ev, "legs.ips", {})
    pods = dig(ev, "pods", {})
    m = events_present(dig(ev, "legs.trace", []), [
        {"kind": "ct_new", "netns": pods.get("tour/c1", {}).get("netns"), "saddr": ips.get("c1"),
         "daddr": ips.get("waypoint"), "dport": mesh.HBONE_PORT},
        {"kind": "ct_new", "netns": pods.get("tour/echo-v1", {}).get("netns"), "saddr": ips.get("waypoint"),
         "daddr": ips.get("echo-v1"), "dport": mesh.HBONE_PORT},
    ], ordered=True)
    return m.ok, "conntrack: " + m.seen()


def legs_on_wire(ev: Evidence) -> tuple[bool, str]:
    segs, ips = dig(ev, "legs.wire.segments", []), dig(ev, "legs.ips", {})
    leg1 = [s for s in segs if (s["saddr"], s["daddr"], s["dport"]) == (ips["c1"], ips["waypoint"], mesh.HBONE_PORT)]
    leg2 = [s for s in segs if (s["saddr"], s["daddr"], s["dport"]) == (ips["waypoint"], ips["echo-v1"], mesh.HBONE_PORT)]
    plain = [s for s in segs if s["dport"] in HTTP_PORTS or s["sport"] in HTTP_PORTS]
    clear = bool(dig(ev, "legs.wire.marker_in_clear"))
    return (bool(leg1) and bool(leg2) and not plain and not clear,
            f"C1 → waypoint:15008 {len(leg1)} segment(s) (into W2), waypoint → echo-v1:15008 {len(leg2)} "
            f"(into W1), {len(plain)} on the HTTP ports, request path readable: {clear}")


def legs_in_logs(ev: Evidence) -> tuple[bool, str]:
    marker, ips = dig(ev, "legs.marker"), dig(ev, "legs.ips", {})
    zt = dig(ev, "legs.w1_ztunnel", [])
    out = [x for x in zt if x.get("direction") == "outbound" and x.get("src.workload") == "c1-0"
           and x.get("dst.workload") == "waypoint-0"]
    inb = [x for x in zt if x.get("direction") == "inbound" and x.get("src.workload") == "waypoint-0"
           and x.get("dst.workload") == "echo-v1-0"]
    wp = [x for x in dig(ev, "legs.waypoint_log", []) if x.get("path") == marker]
    ok = (bool(out) and out[0].get("dst.service") == "echo.tour.svc.cluster.local"
          and out[0].get("dst.identity") == spiffe("waypoint") and bool(inb)
          and inb[0].get("src.identity") == spiffe("waypoint") and len(wp) == 1
          and wp[0].get("upstream_host") == f"envoy://connect_originate/{ips.get('echo-v1')}:8080")
    return ok, (f"W1's ztunnel out: {[(x.get('dst.workload'), x.get('dst.service')) for x in out]}; "
                f"waypoint: {[(x.get('response_code'), x.get('upstream_host')) for x in wp]}; "
                f"W1's ztunnel in: {[(x.get('src.workload'), x.get('src.identity')) for x in inb]}")


# -- HTTPRoute and the split ---------------------------------------------------------------
def route_all_v1(ev: Evidence) -> tuple[bool, str]:
    r = dig(ev, "route.client")
    return all_ok(r, "echo-v1-0"), _curl(r)


def route_at_waypoint(ev: Evidence) -> tuple[bool, str]:
    lines = [x for x in dig(ev, "route.waypoint_log", []) if x.get("path") == "/tour/route"]
    routes = Counter((x.get("route_name"), x.get("upstream_cluster")) for x in lines)
    want = ("tour.echo.0", "inbound-vip|80|http|echo-v1.tour.svc.cluster.local")
    return routes == Counter({want: dig(ev, "route.n")}), f"waypoint access log (route, cluster): {dict(routes)}"


def split_answered(ev: Evidence) -> tuple[bool, str]:
    r = dig(ev, "split.client")
    return all_ok(r), _curl(r)


def split_90_10(ev: Evidence) -> tuple[bool, str]:
    r, n = dig(ev, "split.client"), dig(ev, "split.n")
    got = Counter(r["servers"]) if r else Counter()
    lo, hi = split_range(n)
    v2 = got.get("echo-v2-0", 0)
    ok = sum(got.values()) == n and set(got) <= {"echo-v1-0", "echo-v2-0"} and lo <= v2 <= hi
    return ok, (f"{n} requests: echo-v1 {got.get('echo-v1-0', 0)}, echo-v2 {v2} "
                f"({100 * v2 / n:.1f} %); tolerance for v2: [{lo}, {hi}] (10 % ± {SPLIT_SIGMAS} σ of "
                f"Binomial({n}, 0.1))")


# -- bypass --------------------------------------------------------------------------------
def bypass_post_200(ev: Evidence) -> tuple[bool, str]:
    r = dig(ev, "bypass.post")
    ok = bool(r) and r["exit_code"] == 0 and r["codes"] == ["200"] and \
        set(r["servers"]) <= {"echo-v1-0", "echo-v2-0"}
    return ok, _curl(r)


def bypass_no_waypoint(ev: Evidence) -> tuple[bool, str]:
    lines = dig(ev, "bypass.waypoint_log")
    return lines == [], f"{len(lines or [])} waypoint access-log line(s) while legacy/client posted"


def bypass_direct(ev: Evidence) -> tuple[bool, str]:
    ip = dig(ev, "bypass.client_ip")
    ins = [x for x in dig(ev, "bypass.w1_ztunnel", []) if (x.get("src.addr") or "").startswith(f"{ip}:")]
    ok = len(ins) == 1 and ins[0].get("direction") == "inbound" and "src.identity" not in ins[0] \
        and "dst.hbone_addr" not in ins[0] and ins[0].get("dst.workload") in ("echo-v1-0", "echo-v2-0")
    return ok, ("W1's ztunnel: " + "; ".join(
        f"{x.get('direction')} plaintext from {x.get('src.addr')} to {x.get('dst.workload')} "
        f"(peer identity: {x.get('src.identity', 'none')})" for x in ins) if ins else
        f"no ztunnel line from {ip}")


# -- identity ------------------------------------------------------------------------------
def ca_refuses(ev: Evidence) -> tuple[bool, str]:
    a = dig(ev, "identity.asks_s1", {})
    return (a.get("status") == 403 and "impersonation" in (a.get("answer") or ""),
            f"W1's ztunnel asks for {a.get('asked')}: CA answers {a.get('status')} {a.get('answer')!r}")


def ca_serves_local(ev: Evidence) -> tuple[bool, str]:
    a = dig(ev, "identity.asks_c1", {})
    return (a.get("status") == 200 and a.get("answer") == f"certificate for {a.get('asked')}",
            f"the same credentials ask for {a.get('asked')} (a pod on W1): {a.get('status')} "
            f"{a.get('answer')!r}")


def _is_ztunnel(uri: str) -> bool:
    try:
        return Identity.parse(uri).is_ztunnel
    except IdentityError:
        return False


def server_sees_pods(ev: Evidence) -> tuple[bool, str]:
    principals = {s["metric"].get("source_principal") for s in dig(ev, "metrics.s1_source_principals", [])}
    logged = set(dig(ev, "identity.ztunnel_src_identities", []))
    s1_side = {x.get("src.identity") for x in dig(ev, "l4.w2_ztunnel", []) if x.get("direction") == "inbound"}
    pods = {spiffe(c) for c in ("c1", "c2", "c3")}
    ok = (s1_side == {spiffe("c1"), spiffe("c2")} and principals == pods and bool(logged)
          and not any(_is_ztunnel(u) for u in logged | principals))
    return ok, (f"S1's ztunnel saw {sorted(s1_side)}; Prometheus source_principal toward s1: "
                f"{sorted(principals)}; every src.identity in ztunnel logs: {sorted(logged)}")

