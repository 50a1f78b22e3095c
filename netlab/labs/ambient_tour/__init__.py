"""The ambient-tour lab: Istio's "Ambient data plane" page, walked step by step on the kernel.

The page (istio/istio.io content/en/docs/ambient/architecture/data-plane) sorts workloads
into out of mesh, in mesh (ztunnel, L4) and in mesh with a waypoint (L7), and draws the L4
example: clients C1 and C2 on node W1 and C3 on W2 calling server S1 on W2. Each step is
a variant judged on what the wire, the trace, the proxies' logs, the lab's Prometheus
and the real clients show.

Eight steps read one run on one instance (`shares_instance`); traffic.py says how each
keeps to its own pairs, windows and series so that none is judged on another's traces.
The L4 DENY and the 90/10 route change the model, so each gets an instance of its own.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from netlab import model
from netlab.labs import changes
from netlab.labs.ambient_tour import expectations as x
from netlab.labs.ambient_tour.sections import sections
from netlab.labs.ambient_tour.traffic import N_L4, N_ROUTE, N_SPLIT, traffic
from netlab.labs.framework import Change, Expectation, Lab, Outcome, Variant, expect

TOUR = {"run": "tour"}
ONE_RUN = "tour"

# C2's identity may not reach S1: enforced by S1's ztunnel (a selector, so never a waypoint's).
DENY_C2 = model.Resource("AuthorizationPolicy", "tour", "deny-c2", {
    "selector": {"matchLabels": {"app": "s1"}},
    "action": "DENY",
    "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/tour/sa/c2"]}}]}]})


def without_prometheus(lab: model.Lab) -> model.Lab:
    """A variant that reads no metrics skips the lab's Prometheus (about 6 s of start-up)."""
    return replace(lab, prometheus=replace(lab.prometheus, enabled=False))


def route_weights(v1: int, v2: int) -> Change:
    """The HTTPRoute `tour/echo` with weighted backends instead of echo-v1 alone."""
    def apply(lab: model.Lab) -> model.Lab:
        route = next((r for r in lab.resources if (r.kind, r.namespace, r.name) == ("HTTPRoute", "tour", "echo")),
                     None)
        if route is None:
            raise KeyError("no HTTPRoute tour/echo in the lab's topology")
        rules = [{"backendRefs": [{"name": "echo-v1", "port": 80, "weight": v1},
                                  {"name": "echo-v2", "port": 80, "weight": v2}]}]
        new = replace(route, spec={**route.spec, "rules": rules})
        return replace(lab, resources=[new if r is route else r for r in lab.resources])
    return apply


def _shared(name: str, summary: str, outcome: Outcome, *expectations: Expectation) -> Variant:
    return Variant(name, summary, outcome, tuple(expectations),
                   params=TOUR, shares_instance=ONE_RUN)


VARIANTS = (
    _shared("out-of-mesh", "legacy/client (W1) → legacy/server (W2): no mesh at all",
            Outcome("plaintext", "the request crosses the node link readable; no ztunnel touches it",
                    good=False),
            expect("answered", "curl gets legacy/server's answer", x.plain_answered, "out_of_mesh.client"),
            expect("plaintext", "W2's link carries the request path in clear text to :8080, nothing to :15008",
                   x.plaintext_on_wire, "out_of_mesh.wire"),
            expect("no-ztunnel-log", "no ztunnel access-log line names legacy/server",
                   x.no_ztunnel_line, "out_of_mesh.ztunnel_lines_naming_server"),
            expect("no-ztunnel-series", "Prometheus holds no ztunnel series toward the legacy namespace",
                   x.no_ztunnel_series, "metrics.out_of_mesh")),
    _shared("l4-hbone", f"C1 and C2 (W1) → S1 (W2), {N_L4} requests each, each its own TCP connection",
            Outcome("works", "mTLS HBONE between the nodes, one pooled connection per identity pair carrying "
                    "every request"),
            expect("answered", "every request is answered by S1", x.l4_answered, "l4.clients"),
            expect("only-tls", "between the nodes only TLS to :15008: each connection opens with a TLS "
                   "handshake record; nothing to :80/:8080; the path is not readable", x.l4_only_tls,
                   "l4.wire"),
            expect("pooled", f"one TCP connection (one SYN) per identity pair on the wire, carrying {N_L4} "
                   "tunnels each (ztunnel's log lines on both sides)", x.l4_pooled, "l4.wire", "l4.w1_ztunnel",
                   "l4.w2_ztunnel"),
            expect("spiffe-in-logs", "S1's ztunnel logs the SPIFFE IDs of C1 and C2 → S1", x.l4_identities,
                   "l4.w2_ztunnel"),
            expect("metrics", f"Prometheus: source and destination report {N_L4} mutual_tls connections per "
                   "client, with its SPIFFE ID", x.l4_metrics, "metrics.l4")),
    _shared("l4-same-node", "C3 (W2) → S1 (W2): the same node",
            Outcome("works", "local traffic still goes through W2's ztunnel: same L4 policy and telemetry"),
            expect("answered", "every request is answered by S1", x.same_node_answered, "same_node.client"),
            expect("off-link", "no packet of C3's crosses a node link", x.same_node_off_link,
                   "same_node.link_segments_of_c3"),
            expect("ztunnel-log", "W2's ztunnel logs each connection twice (outbound over HBONE, inbound)",
                   x.same_node_ztunnel_log, "same_node.w2_ztunnel"),
            expect("metrics", "Prometheus: W2's ztunnel reports c3 → s1 as source and as destination",
                   x.same_node_metrics, "metrics.same_node")),
    Variant("l4-deny", "an L4 DENY on C2's principal at S1 (AuthorizationPolicy with a selector)",
            Outcome("refused", "S1's ztunnel refuses C2's tunnel and C2's connection is reset; C1 is served",
                    good=True),
            (expect("reset", "C2's curl exits 56 (connection reset by peer)", x.deny_reset, "deny.c2"),
             expect("others-served", "C1 → S1 still answered", x.deny_others_served, "deny.c1"),
             expect("at-ztunnel", "S1's ztunnel logs the policy rejection by tour/deny-c2; C2's ztunnel logs "
                    "the 401", x.deny_at_ztunnel, "deny.w2_ztunnel", "deny.w1_ztunnel"),
             expect("after-mtls", "the CONNECT reached S1's ztunnel over HBONE (it judged C2's principal)",
                    x.deny_after_mtls, "deny.wire")),
            changes.chain(changes.add(DENY_C2), without_prometheus), {"run": "deny"}),
    _shared("l7-policy", "C2 → echo: the waypoint's AuthorizationPolicy allows GET only",
            Outcome("refused", "GET passes; POST is answered 403 RBAC: access denied by the waypoint",
                    good=True),
            expect("get", "GET is answered 200", x.l7_get, "l7.get"),
            expect("post-403", f"POST is answered 403 with the body {x.RBAC_BODY!r}", x.l7_post_403,
                   "l7.post"),
            expect("at-waypoint", "the waypoint's access log: POST 403 rbac_access_denied_matched_policy[...], "
                   "GET 200", x.l7_at_waypoint, "l7.waypoint_log")),
    _shared("waypoint-legs", "C1 (W1) → echo: through the waypoint on W2 to echo-v1 on W1",
            Outcome("works", "two HBONE legs: C1's ztunnel → waypoint, waypoint → echo-v1's ztunnel"),
            expect("answered", "answered by echo-v1", x.legs_answered, "legs.client"),
            expect("trace", "conntrack: C1 → waypoint:15008 in C1's netns, then waypoint → echo-v1:15008 in "
                   "echo-v1's", x.legs_in_trace, "legs.trace"),
            expect("capture", "both legs on the node links, TLS to :15008 only, the path not readable",
                   x.legs_on_wire, "legs.wire"),
            expect("logs", "C1's ztunnel sends to the waypoint for echo.tour, the waypoint routes to echo-v1 "
                   "over connect_originate, echo-v1's ztunnel sees the waypoint's identity", x.legs_in_logs,
                   "legs.w1_ztunnel", "legs.waypoint_log")),
    _shared("httproute-v1", f"C1 → echo, {N_ROUTE} requests each on its own connection; HTTPRoute echo → "
            "echo-v1", Outcome("works", "100 % of the responses come from echo-v1"),
            expect("all-v1", f"all {N_ROUTE} answered by echo-v1", x.route_all_v1, "route.client"),
            expect("routed", "the waypoint logs route tour.echo.0 to echo-v1 for each", x.route_at_waypoint,
                   "route.waypoint_log")),
    Variant("split-90-10", f"the HTTPRoute with weights 90/10, {N_SPLIT} requests on one keep-alive connection",
            Outcome("works", "the waypoint splits per request, about 90 % to v1 and 10 % to v2"),
            (expect("answered", f"all {N_SPLIT} answered", x.split_answered, "split.client"),
             expect("split", "echo-v2's share lies within 10 % ± 4.5 σ of Binomial(200, 0.1): "
                    f"{x.split_range(N_SPLIT)}", x.split_90_10, "split.client")),
            changes.chain(route_weights(90, 10), without_prometheus), {"run": "split"}),
    _shared("out-of-mesh-bypass", "legacy/client POSTs to echo: a client out of the mesh",
            Outcome("bypassed", "the POST is answered 200: out of the mesh, the request never meets the "
                    "waypoint's L7 policy", good=False),
            expect("post-200", "the POST is answered 200 by an echo pod", x.bypass_post_200, "bypass.post"),
            expect("no-waypoint", "the waypoint logs nothing", x.bypass_no_waypoint, "bypass.waypoint_log"),
            expect("direct", "echo's ztunnel takes it as plaintext straight from legacy/client",
                   x.bypass_direct, "bypass.w1_ztunnel")),
    _shared("identity", "W1's ztunnel asks the CA for S1's identity; what S1's side sees as the peer",
            Outcome("refused", "the CA refuses W1's ztunnel S1's certificate (no S1 pod on W1); the server sees "
                    "client pods' SPIFFE IDs, never ztunnel's", good=True),
            expect("ca-refuses", "the CA answers 403 impersonation failure to W1's ztunnel credentials",
                   x.ca_refuses, "identity.asks_s1"),
            expect("ca-serves-local", "the same credentials get C1's certificate (C1 runs on W1)",
                   x.ca_serves_local, "identity.asks_c1"),
            expect("server-sees-pods", "S1's side sees C1's and C2's SPIFFE IDs (logs and Prometheus); no "
                   "ztunnel identity anywhere", x.server_sees_pods, "l4.w2_ztunnel", "metrics.s1_source_principals",
                   "identity.ztunnel_src_identities")),
)

LAB = Lab(name="ambient-tour", title="The Istio ambient data plane, step by step (istio.io \"Ambient data plane\")",
          folder=Path(__file__).parent, variants=VARIANTS, traffic=traffic, sections=sections)
