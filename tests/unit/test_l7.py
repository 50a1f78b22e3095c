"""The waypoint's L7 engines against the facts: Istio's L7 AuthorizationPolicy (order,
fields, Envoy's RBAC denial) and Gateway API HTTPRoute (matching, precedence, weights)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from netlab.dataplane.l7 import authz, routes
from netlab.dataplane.l7.authz import L7Request, Target
from netlab.snapshot import HttpRoute, Policy

SLEEP = "spiffe://cluster.local/ns/mesh/sa/sleep"
OTHER = "spiffe://cluster.local/ns/other/sa/curl"
TARGET = Target("mesh", "guarded", "mesh", "waypoint")


def ap(spec: dict[str, Any], name: str = "p", ns: str = "mesh", to_service: str | None = "guarded") -> Policy:
    refs = [{"kind": "Service", "group": "", "name": to_service}] if to_service else []
    return Policy("AuthorizationPolicy", ns, name, {"targetRefs": refs, **spec} if refs else spec)


def req(method: str = "GET", path: str = "/", identity: str | None = SLEEP, host: str = "guarded:80",
        headers: dict[str, str] | None = None, port: int = 80) -> L7Request:
    return L7Request(method=method, path=path, host=host, headers=headers or {}, src_ip="10.244.0.2",
                     src_identity=identity, dst_ip="10.96.0.13", dst_port=port)


GET_FROM_SLEEP = {"action": "ALLOW", "rules": [
    {"from": [{"source": {"principals": ["cluster.local/ns/mesh/sa/sleep"]}}],
     "to": [{"operation": {"methods": ["GET"]}}]}]}


def test_allow_get_lets_get_through_and_denies_post_as_envoy_rbac_does() -> None:
    policies = [ap(GET_FROM_SLEEP)]
    assert authz.authorize(policies, TARGET, req("GET")).allowed
    d = authz.authorize(policies, TARGET, req("POST"))
    assert not d.allowed and d.details == "rbac_access_denied_matched_policy[none]"
    assert (authz.DENIED_STATUS, authz.DENIED_BODY, len(authz.DENIED_BODY)) == (403, b"RBAC: access denied", 19)
    # another identity, even with GET
    assert not authz.authorize(policies, TARGET, req("GET", identity=OTHER)).allowed


def test_deny_wins_and_names_policy_and_rule() -> None:
    deny = ap({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]},
                                           {"to": [{"operation": {"methods": ["DELETE"]}}]}]}, name="no-admin")
    d = authz.authorize([ap(GET_FROM_SLEEP), deny], TARGET, req("DELETE"))
    assert d.details == "rbac_access_denied_matched_policy[ns[mesh]-policy[no-admin]-rule[1]]"
    d = authz.authorize([ap(GET_FROM_SLEEP), deny], TARGET, req("GET", "/admin/x?y=1"))
    assert d.details == "rbac_access_denied_matched_policy[ns[mesh]-policy[no-admin]-rule[0]]"
    assert authz.authorize([ap(GET_FROM_SLEEP), deny], TARGET, req("GET", "/public")).allowed


def test_only_target_refs_to_this_service_or_this_waypoint_apply() -> None:
    deny_all = {"action": "DENY", "rules": [{}]}
    assert authz.authorize([ap(deny_all, to_service="echo")], TARGET, req()).allowed
    selector = Policy("AuthorizationPolicy", "mesh", "sel", {"selector": {"matchLabels": {"app": "echo"}}, **deny_all})
    nswide = Policy("AuthorizationPolicy", "mesh", "ns", deny_all)
    assert authz.authorize([selector, nswide], TARGET, req()).allowed  # ztunnel's, not the waypoint's
    other_ns = ap(deny_all, ns="other")
    assert authz.authorize([other_ns], TARGET, req()).allowed
    gw = Policy("AuthorizationPolicy", "mesh", "gw", {"targetRefs": [
        {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}], **deny_all})
    assert not authz.authorize([gw], TARGET, req()).allowed
    assert not authz.authorize([gw], Target(None, None, "mesh", "waypoint"), req()).allowed  # pod-IP request


def test_empty_rules_match_nothing_and_empty_rule_matches_everything() -> None:
    assert not authz.authorize([ap({"action": "ALLOW"})], TARGET, req()).allowed  # allow-nothing
    assert authz.authorize([ap({"action": "ALLOW", "rules": [{}]})], TARGET, req()).allowed


@pytest.mark.parametrize("operation,request_,hit", [
    ({"hosts": ["GUARDED"]}, req(host="guarded:80"), True),
    ({"hosts": ["*.mesh.svc.cluster.local"]}, req(host="guarded.mesh.svc.cluster.local"), True),
    ({"hosts": ["echo"]}, req(host="guarded"), False),
    ({"paths": ["/api/*"]}, req(path="/api/v1?x=1"), True),
    ({"paths": ["/api"]}, req(path="/api?x=1"), True),
    ({"paths": ["*.css"]}, req(path="/a/b.css"), True),
    ({"notPaths": ["/private*"]}, req(path="/private/1"), False),
    ({"notMethods": ["POST"]}, req("GET"), True),
    ({"ports": ["80"]}, req(port=80), True),
    ({"ports": ["8080"]}, req(port=80), False),
])
def test_operation_fields(operation: dict[str, Any], request_: L7Request, hit: bool) -> None:
    p = ap({"action": "ALLOW", "rules": [{"to": [{"operation": operation}]}]})
    assert authz.authorize([p], TARGET, request_).allowed is hit


@pytest.mark.parametrize("source,identity,hit", [
    ({"namespaces": ["mesh"]}, SLEEP, True),
    ({"namespaces": ["mesh"]}, OTHER, False),
    ({"notNamespaces": ["other"]}, OTHER, False),
    ({"principals": ["*"]}, None, False),  # plaintext has no principal
    ({"principals": ["cluster.local/ns/mesh/*"]}, SLEEP, True),
    ({"serviceAccounts": ["sleep"]}, SLEEP, True),
    ({"ipBlocks": ["10.244.0.0/24"]}, None, True),
    ({"requestPrincipals": ["*"]}, SLEEP, False),  # no JWT: never matches
])
def test_source_fields(source: dict[str, Any], identity: str | None, hit: bool) -> None:
    p = ap({"action": "ALLOW", "rules": [{"from": [{"source": source}]}]})
    assert authz.authorize([p], TARGET, req(identity=identity)).allowed is hit


def test_when_request_headers() -> None:
    p = ap({"action": "ALLOW", "rules": [{"when": [{"key": "request.headers[X-User]", "values": ["alice", "bo*"]}]}]})
    assert authz.authorize([p], TARGET, req(headers={"x-user": "bob"})).allowed
    assert not authz.authorize([p], TARGET, req(headers={"x-user": "carol"})).allowed
    assert not authz.authorize([p], TARGET, req()).allowed
    deny = ap({"action": "DENY", "rules": [{"when": [{"key": "request.headers[x-debug]", "notValues": ["0"]}]}]})
    assert not authz.authorize([deny], TARGET, req(headers={"x-debug": "1"})).allowed
    assert authz.authorize([deny], TARGET, req(headers={"x-debug": "0"})).allowed
    unknown = ap({"action": "ALLOW", "rules": [{"when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}]})
    assert not authz.authorize([unknown], TARGET, req()).allowed


# -- HTTPRoute --------------------------------------------------------------------------

def route(name: str, rules: list[dict[str, Any]], parent: str = "echo", port: int | None = 80,
          ns: str = "mesh") -> HttpRoute:
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": parent}
    if port is not None:
        ref["port"] = port
    return HttpRoute(ns, name, {"parentRefs": [ref], "rules": rules})


def rq(path: str = "/", method: str = "GET", **headers: str) -> routes.Request:
    return routes.Request(method, path, {k.replace("_", "-"): v for k, v in headers.items()})


def to(name: str, weight: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": 80}
    if weight is not None:
        out["weight"] = weight
    return out


def test_no_route_means_the_service_routes_to_itself() -> None:
    r = routes.choose([], "mesh", "echo", 80, rq())
    assert r == routes.Route("default", routes.Backend("mesh", "echo", 80))
    # a route for another Service, port or namespace does not attach
    others = [route("a", [{"backendRefs": [to("v2")]}], parent="split"),
              route("b", [{"backendRefs": [to("v2")]}], port=9000),
              route("c", [{"backendRefs": [to("v2")]}], ns="other")]
    assert routes.choose(others, "mesh", "echo", 80, rq()).backend == routes.Backend("mesh", "echo", 80)


def test_rule_without_matches_takes_everything_and_names_the_route() -> None:
    r = routes.choose([route("to-v1", [{"backendRefs": [to("echo-v1")]}])], "mesh", "echo", 80, rq("/x"))
    assert r.name == "mesh.to-v1.0" and r.backend == routes.Backend("mesh", "echo-v1", 80)


def test_precedence_exact_then_longest_prefix_then_method_then_headers() -> None:
    rt = route("r", [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [to("root")]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [to("api")]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api/v2"}}], "backendRefs": [to("api-v2")]},
        {"matches": [{"path": {"type": "Exact", "value": "/api/v2/x"}}], "backendRefs": [to("exact")]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"}], "backendRefs": [to("post")]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST",
                      "headers": [{"name": "X-Canary", "value": "1"}]}], "backendRefs": [to("canary")]},
    ])

    def name(r: routes.Request) -> str:
        got = routes.choose([rt], "mesh", "echo", 80, r).backend
        assert got is not None
        return got.name

    assert name(rq("/other")) == "root"
    assert name(rq("/apix")) == "root"  # PathPrefix is element-wise
    assert name(rq("/api")) == "api" and name(rq("/api/")) == "api"
    assert name(rq("/api/v2/y?q=1")) == "api-v2"
    assert name(rq("/api/v2/x")) == "exact"
    assert name(rq("/api/x", "POST")) == "post"
    assert name(rq("/api/x", "POST", x_canary="1")) == "canary"


def test_header_regex_and_query_and_no_match_is_404() -> None:
    rt = route("r", [{"matches": [{"headers": [{"type": "RegularExpression", "name": "user", "value": "a.*"}]},
                                  {"queryParams": [{"name": "v", "value": "2"}]}],
                      "backendRefs": [to("v2")]}])
    assert routes.choose([rt], "mesh", "echo", 80, rq(user="alice")).backend.name == "v2"  # type: ignore[union-attr]
    assert routes.choose([rt], "mesh", "echo", 80, rq("/?v=2")).backend.name == "v2"  # type: ignore[union-attr]
    miss = routes.choose([rt], "mesh", "echo", 80, rq(user="bob"))
    assert miss.backend is None and miss.status == 404


def test_weights() -> None:
    rt = route("split", [{"backendRefs": [to("echo-v1", 90), to("echo-v2", 10), to("never", 0)]}])
    pick = lambda x: routes.choose([rt], "mesh", "echo", 80, rq(), rng=lambda: x).backend.name  # type: ignore[union-attr]  # noqa: E731
    assert pick(0.0) == "echo-v1" and pick(0.899) == "echo-v1" and pick(0.9) == "echo-v2" and pick(0.999) == "echo-v2"
    rng = random.Random(7)
    n = 10_000
    v2 = sum(routes.choose([rt], "mesh", "echo", 80, rq(), rng=rng.random).backend.name == "echo-v2"  # type: ignore[union-attr]
             for _ in range(n))
    assert abs(v2 / n - 0.1) < 0.02
    zero = route("z", [{"backendRefs": [to("a", 0)]}, ])
    assert routes.choose([zero], "mesh", "echo", 80, rq()).status == 500
