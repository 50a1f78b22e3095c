"""The ambient-tour lab's checks, changes and sections on synthetic evidence (no root).

The evidence below is shaped as the traffic records it; each test breaks one fact the
Istio page states (a second TCP connection, a readable path, exit 52 instead of 56,
a 50/50 split...) and watches the check that guards it fail.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from netlab.labs import registry
from netlab.labs.ambient_tour import DENY_C2, route_weights, without_prometheus
from netlab.labs.ambient_tour import expectations as x
from netlab.labs.ambient_tour.sections import sections
from netlab.labs.framework import VariantResult, evaluate
from netlab.labs.sections import Sequence, Text

LAB = registry.get("ambient-tour")
IP = {"c1": "10.244.0.2", "c2": "10.244.0.3", "c3": "10.244.1.2", "s1": "10.244.1.3",
      "echo-v1": "10.244.0.4", "echo-v2": "10.244.0.5", "legacy/client": "10.244.0.6",
      "legacy/server": "10.244.1.4", "waypoint": "10.244.1.5"}
N = 10


def sid(sa: str) -> str:
    return x.spiffe(sa)


def seg(src: str, sport: int, dst: str, dport: int, flags: str = "PA", nbytes: int = 0,
        head: str = "") -> dict[str, Any]:
    return {"saddr": src, "sport": sport, "daddr": dst, "dport": dport, "flags": flags,
            "bytes": nbytes, "head": head}


def tls_flow(src: str, sport: int, dst: str) -> list[dict[str, Any]]:
    return [seg(src, sport, dst, 15008, "S"), seg(src, sport, dst, 15008, "PA", 517, "160301"),
            seg(src, sport, dst, 15008, "PA", 900, "170303")]


def curl(client: str, n: int = 1, code: str = "200", server: str | None = None, exit_code: int = 0,
         bodies: list[str] | None = None, stderr: str = "") -> dict[str, Any]:
    return {"client": client, "argv": ["curl"], "requests": n, "exit_code": exit_code, "codes": [code] * n,
            "servers": [server] * n, "bodies": bodies or [], "stderr": stderr}


def zt(direction: str, src: str, dst: str, src_id: str | None = None, hbone: str | None = None,
       **more: str) -> dict[str, Any]:
    d = {"direction": direction, "src.workload": src, "dst.workload": dst, **more}
    if src_id:
        d["src.identity"] = src_id
    if hbone:
        d["dst.hbone_addr"] = hbone
    return d


def series(reporter: str, source: str, value: float, **labels: str) -> dict[str, Any]:
    return {"metric": {"reporter": reporter, "source_workload": source, **labels}, "value": value}


def good() -> dict[str, Any]:
    pods = {"tour/c1": {"ip": IP["c1"], "netns": "nl-t-pod-tour.c1-0", "node": "w1"},
            "tour/echo-v1": {"ip": IP["echo-v1"], "netns": "nl-t-pod-tour.echo-v1-0", "node": "w1"}}
    l4_out, l4_in = [], []
    for c in ("c1", "c2"):
        l4_out += [zt("outbound", f"{c}-0", "s1-0", sid(c), "10.244.1.3:8080")] * N
        l4_in += [zt("inbound", f"{c}-0", "s1-0", sid(c), "10.244.1.3:8080", **{"dst.identity": sid("s1")})] * N
    return {
        "pods": pods,
        "out_of_mesh": {
            "client": curl("legacy/client", server="server-0"), "marker": "/tour/out-of-mesh/t",
            "server_ip": IP["legacy/server"], "ztunnel_lines_naming_server": [], "ztunnel_lines_in_run": 90,
            "wire": {"segments": [seg(IP["legacy/client"], 4000, IP["legacy/server"], 8080, "PA", 97, "474554")],
                     "marker_in_clear": True}},
        "l4": {"clients": {c: curl(f"tour/{c}", N, server="s1-0") for c in ("c1", "c2")}, "n": N, "s1": IP["s1"],
               "client_ips": {"c1": IP["c1"], "c2": IP["c2"]},
               "wire": {"segments": tls_flow(IP["c1"], 5001, IP["s1"]) + tls_flow(IP["c2"], 5002, IP["s1"]),
                        "marker_in_clear": False},
               "w1_ztunnel": l4_out, "w2_ztunnel": l4_in},
        "same_node": {"client": curl("tour/c3", 3, server="s1-0"), "n": 3, "c3": IP["c3"], "link_segments_of_c3": [],
                      "w2_ztunnel": [zt("outbound", "c3-0", "s1-0", sid("c3"), "10.244.1.3:8080"),
                                     zt("inbound", "c3-0", "s1-0", sid("c3"), "10.244.1.3:8080")] * 3,
                      "w1_ztunnel": []},
        "legs": {"client": curl("tour/c1", server="echo-v1-0"), "marker": "/tour/legs/t",
                 "ips": {k: IP[k] for k in ("c1", "waypoint", "echo-v1", "echo-v2")},
                 "trace": [{"kind": "ct_new", "netns": "nl-t-pod-tour.c1-0", "saddr": IP["c1"],
                            "daddr": IP["waypoint"], "dport": 15008},
                           {"kind": "ct_new", "netns": "nl-t-pod-tour.echo-v1-0", "saddr": IP["waypoint"],
                            "daddr": IP["echo-v1"], "dport": 15008}],
                 "wire": {"segments": tls_flow(IP["c1"], 5003, IP["waypoint"]) + tls_flow(IP["waypoint"], 5004, IP["echo-v1"]),
                          "marker_in_clear": False},
                 "w1_ztunnel": [zt("outbound", "c1-0", "waypoint-0", sid("c1"), "10.96.0.12:80",
                                   **{"dst.service": "echo.tour.svc.cluster.local", "dst.identity": sid("waypoint")}),
                                zt("inbound", "waypoint-0", "echo-v1-0", sid("waypoint"), "10.244.0.4:8080")],
                 "waypoint_log": [{"method": "GET", "path": "/tour/legs/t", "response_code": "200",
                                   "upstream_host": f"envoy://connect_originate/{IP['echo-v1']}:8080"}]},
        "route": {"client": curl("tour/c1", 20, server="echo-v1-0"), "n": 20,
                  "waypoint_log": [{"path": "/tour/route", "route_name": "tour.echo.0",
                                    "upstream_cluster": "inbound-vip|80|http|echo-v1.tour.svc.cluster.local"}] * 20},
        "l7": {"get": curl("tour/c2", server="echo-v1-0"), "post": curl("tour/c2", code="403", bodies=[x.RBAC_BODY]),
               "waypoint_log": [{"method": "GET", "path": "/tour/l7", "response_code": "200"},
                                {"method": "POST", "path": "/tour/l7", "response_code": "403",
                                 "response_code_details": "rbac_access_denied_matched_policy[none]"}]},
        "bypass": {"post": curl("legacy/client", server="echo-v2-0"), "client_ip": IP["legacy/client"],
                   "waypoint_log": [], "w2_ztunnel": [],
                   "w1_ztunnel": [zt("inbound", "client-0", "echo-v2-0", **{"src.addr": f"{IP['legacy/client']}:40000"})]},
        "identity": {"asks_s1": {"asked": sid("s1"), "status": 403,
                                 "answer": "request impersonation authentication failure"},
                     "asks_c1": {"asked": sid("c1"), "status": 200, "answer": f"certificate for {sid('c1')}"},
                     "ztunnel_src_identities": [sid("c1"), sid("c2"), sid("c3"), sid("waypoint")]},
        "metrics": {
            "out_of_mesh": [],
            "l4": [series(r, c, N, connection_security_policy="mutual_tls", source_principal=sid(c))
                   for r in ("source", "destination") for c in ("c1", "c2")],
            "same_node": [series(r, "c3", 3, pod="ztunnel-w2") for r in ("source", "destination")],
            "s1_source_principals": [{"metric": {"source_principal": sid(c)}, "value": 1.0} for c in ("c1", "c2", "c3")]},
        "deny": {"c2": curl("tour/c2", code="000", exit_code=56, stderr="curl: (56) Recv failure: Connection reset by peer"),
                 "c1": curl("tour/c1", server="s1-0"), "client_ips": {"c1": IP["c1"], "c2": IP["c2"]}, "s1": IP["s1"],
                 "w2_ztunnel": [zt("inbound", "c2-0", "s1-0", sid("c2"), error="connection closed due to policy "
                                   "rejection: explicitly denied by: tour/deny-c2")],
                 "w1_ztunnel": [zt("outbound", "c2-0", "s1-0", sid("c2"), error="http status: 401 Unauthorized")],
                 "wire": {"segments": tls_flow(IP["c2"], 5005, IP["s1"])}},
        "split": {"client": {**curl("tour/c1", 200), "servers": ["echo-v1-0"] * 181 + ["echo-v2-0"] * 19}, "n": 200},
    }


def verdicts(variant: str, ev: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    return {v.id: (v.held, v.seen) for v in evaluate(LAB.variant(variant), ev)}


def failed(variant: str, ev: dict[str, Any]) -> set[str]:
    return {k for k, (held, _) in verdicts(variant, ev).items() if not held}


@pytest.mark.parametrize("variant", [v.name for v in LAB.variants])
def test_every_variant_holds_on_evidence_that_shows_the_page(variant: str) -> None:
    assert failed(variant, good()) == set(), verdicts(variant, good())


def test_a_second_tcp_connection_per_pair_is_not_pooling() -> None:
    ev = good()
    ev["l4"]["wire"]["segments"] += tls_flow(IP["c1"], 5999, IP["s1"])
    assert failed("l4-hbone", ev) == {"pooled"}
    assert "c1→S1: 10 requests, 2 TCP connection(s)" in verdicts("l4-hbone", ev)["pooled"][1]


def test_plaintext_between_the_nodes_is_not_hbone() -> None:
    ev = good()
    ev["l4"]["wire"]["segments"].append(seg(IP["c1"], 6000, IP["s1"], 8080, "PA", 97, "474554"))
    assert failed("l4-hbone", ev) == {"only-tls"}
    ev = good()
    ev["l4"]["wire"]["segments"] = [s if s["head"] != "160301" else dict(s, head="474554")
                                    for s in ev["l4"]["wire"]["segments"]]
    assert failed("l4-hbone", ev) == {"only-tls"}


def test_out_of_mesh_with_ztunnel_involved_fails() -> None:
    ev = good()
    ev["out_of_mesh"]["ztunnel_lines_naming_server"] = [zt("inbound", "client-0", "server-0")]
    ev["metrics"]["out_of_mesh"] = [series("destination", "client", 1)]
    assert failed("out-of-mesh", ev) == {"no-ztunnel-log", "no-ztunnel-series"}
    ev = good()
    ev["out_of_mesh"]["wire"]["marker_in_clear"] = False
    assert failed("out-of-mesh", ev) == {"plaintext"}


def test_same_node_traffic_that_skips_ztunnel_or_crosses_a_link_fails() -> None:
    ev = good()
    ev["same_node"]["w2_ztunnel"] = []
    ev["same_node"]["link_segments_of_c3"] = [seg(IP["c3"], 1, IP["s1"], 15008)]
    assert failed("l4-same-node", ev) == {"ztunnel-log", "off-link"}


def test_a_deny_seen_as_an_empty_reply_is_not_a_reset() -> None:
    ev = good()
    ev["deny"]["c2"] = curl("tour/c2", code="000", exit_code=52, stderr="curl: (52) Empty reply from server")
    assert failed("l4-deny", ev) == {"reset"}


def test_post_that_passes_the_waypoint_fails_the_l7_step() -> None:
    ev = good()
    ev["l7"]["post"] = curl("tour/c2", server="echo-v1-0")
    ev["l7"]["waypoint_log"][1].update(response_code="200", response_code_details="via_upstream")
    assert failed("l7-policy", ev) == {"post-403", "at-waypoint"}


def test_one_leg_missing_from_trace_and_capture_fails() -> None:
    ev = good()
    ev["legs"]["trace"] = ev["legs"]["trace"][:1]
    ev["legs"]["wire"]["segments"] = [s for s in ev["legs"]["wire"]["segments"] if s["saddr"] != IP["waypoint"]]
    assert failed("waypoint-legs", ev) == {"trace", "capture"}
    ev = good()
    ev["legs"]["trace"].reverse()  # the second leg before the first: not the path
    assert failed("waypoint-legs", ev) == {"trace"}


def test_route_that_reaches_v2_fails() -> None:
    ev = good()
    ev["route"]["client"]["servers"][3] = "echo-v2-0"
    assert failed("httproute-v1", ev) == {"all-v1"}


@pytest.mark.parametrize("v2, held", [(19, True), (1, True), (39, True), (0, False), (40, False),
                                      (100, False), (200, False)])
def test_split_tolerance(v2: int, held: bool) -> None:
    ev = good()
    ev["split"]["client"]["servers"] = ["echo-v1-0"] * (200 - v2) + ["echo-v2-0"] * v2
    assert ("split" not in failed("split-90-10", ev)) is held
    assert x.split_range(200) == (1, 39)


def test_bypass_through_the_waypoint_is_not_a_bypass() -> None:
    ev = good()
    ev["bypass"]["waypoint_log"] = [{"method": "POST", "path": "/tour/bypass", "response_code": "403"}]
    ev["bypass"]["post"] = curl("legacy/client", code="403", bodies=[x.RBAC_BODY])
    assert failed("out-of-mesh-bypass", ev) == {"post-200", "no-waypoint"}


def test_a_ca_that_grants_any_identity_or_a_ztunnel_peer_fails() -> None:
    ev = good()
    ev["identity"]["asks_s1"] = {"asked": sid("s1"), "status": 200, "answer": f"certificate for {sid('s1')}"}
    assert failed("identity", ev) == {"ca-refuses"}
    ev = good()
    ev["identity"]["ztunnel_src_identities"].append("spiffe://cluster.local/ns/istio-system/sa/ztunnel")
    assert failed("identity", ev) == {"server-sees-pods"}


def test_missing_evidence_fails_visibly() -> None:
    for v in LAB.variants:
        assert all(not held for held, _ in verdicts(v.name, {}).values()), v.name


def test_eight_steps_share_one_run_and_the_model_changes_get_their_own() -> None:
    groups = LAB.sharing([v.name for v in LAB.variants])
    assert len(groups) == 3
    assert sorted(map(len, groups)) == [1, 1, 8]
    assert ["l4-deny"] in groups and ["split-90-10"] in groups


def test_the_changes_leave_the_base_alone() -> None:
    base = LAB.topology()
    before = copy.deepcopy(base)
    split = LAB.model(LAB.variant("split-90-10"), base)
    deny = LAB.model(LAB.variant("l4-deny"), base)
    assert base == before
    route = next(r for r in split.resources if r.kind == "HTTPRoute")
    assert [(b["name"], b["weight"]) for b in route.spec["rules"][0]["backendRefs"]] == [("echo-v1", 90), ("echo-v2", 10)]
    assert not split.prometheus.enabled and not deny.prometheus.enabled and base.prometheus.enabled
    assert DENY_C2 in deny.resources and DENY_C2 not in base.resources
    assert without_prometheus(base).prometheus.scrape_interval == base.prometheus.scrape_interval
    with pytest.raises(KeyError):
        route_weights(90, 10)(replace(base, resources=[r for r in base.resources if r.kind != "HTTPRoute"]))


def test_sections_render_from_evidence() -> None:
    ev = good()
    for v in LAB.variants:
        res = VariantResult("ambient-tour", v.name, v.summary, v.outcome, "t", 1.0, [], ev)
        secs = sections(res)
        assert secs and all(isinstance(s, (Text, Sequence)) for s in secs), v.name
    legs = sections(VariantResult("ambient-tour", "waypoint-legs", "", LAB.variant("waypoint-legs").outcome,
                                  "t", 1.0, [], ev))
    assert any(isinstance(s, Sequence) and "waypoint (W2)" in s.lanes for s in legs)
