"""L4 policy: every AuthorizationPolicy field and PeerAuthentication scope, against §6."""

from __future__ import annotations

from typing import Any

import pytest

from netlab.dataplane.policy import Connection, Evaluator, parse_identity, wildcard_match
from netlab.snapshot import Policy

TD = "cluster.local"
LABELS = {"app": "reviews", "version": "v1"}


def conn(identity: str | None = f"spiffe://{TD}/ns/front/sa/web", *, src_ip: str = "10.1.0.5",
         dst_ip: str = "10.2.0.7", port: int = 9080, ns: str = "back",
         labels: dict[str, str] | None = None) -> Connection:
    return Connection(src_ip=src_ip, src_identity=identity, dst_ip=dst_ip, dst_port=port,
                      dst_namespace=ns, dst_labels=dict(LABELS if labels is None else labels),
                      dst_service_account="reviews")


def ap(spec: dict[str, Any], ns: str = "back", name: str = "p") -> Policy:
    return Policy(kind="AuthorizationPolicy", namespace=ns, name=name, spec=spec)


def pa(mode: str | None, ns: str = "back", name: str = "pa", **extra: Any) -> Policy:
    spec: dict[str, Any] = dict(extra)
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    return Policy(kind="PeerAuthentication", namespace=ns, name=name, spec=spec)


def allow_src(**source: Any) -> Policy:
    return ap({"action": "ALLOW", "rules": [{"from": [{"source": source}]}]})


def allowed(policies: list[Policy], c: Connection | None = None) -> bool:
    return Evaluator(policies).authorize(c or conn()).allowed


# --- helpers -----------------------------------------------------------------------------
def test_wildcards() -> None:
    assert wildcard_match("*", "x") and not wildcard_match("*", "")
    assert wildcard_match("cluster.local/ns/front/*", "cluster.local/ns/front/sa/web")
    assert wildcard_match("*/sa/web", "cluster.local/ns/front/sa/web")
    assert not wildcard_match("*/sa/db", "cluster.local/ns/front/sa/web")
    assert not wildcard_match("front", "frontend")


def test_parse_identity() -> None:
    p = parse_identity("spiffe://td/ns/a/sa/b")
    assert p is not None and (p.principal, p.namespace, p.service_account) == ("td/ns/a/sa/b", "a", "b")
    assert parse_identity(None) is None and parse_identity("spiffe://td/garbage") is None


# --- defaults and empty forms --------------------------------------------------------------
def test_no_policy_allows() -> None:
    d = Evaluator([]).authorize(conn())
    assert d.allowed and d.policy is None and "no ALLOW policy" in d.reason


def test_empty_spec_is_allow_nothing() -> None:
    d = Evaluator([ap({}, name="deny-all")]).authorize(conn())
    assert not d.allowed and "back/deny-all" in d.reason


def test_rules_with_empty_rule_allows_all() -> None:
    assert allowed([ap({"rules": [{}]})], conn(None))


def test_deny_without_rules_matches_nothing() -> None:
    assert allowed([ap({"action": "DENY"})])


# --- source fields -------------------------------------------------------------------------
@pytest.mark.parametrize("source,ok", [
    ({"principals": [f"{TD}/ns/front/sa/web"]}, True),
    ({"principals": [f"spiffe://{TD}/ns/front/sa/web"]}, True),
    ({"principals": [f"{TD}/ns/front/sa/db"]}, False),
    ({"principals": ["*/sa/web"]}, True),
    ({"principals": [f"{TD}/ns/front/*"]}, True),
    ({"principals": ["*"]}, True),
    ({"notPrincipals": [f"{TD}/ns/front/sa/web"]}, False),
    ({"notPrincipals": ["*/sa/db"]}, True),
    ({"namespaces": ["front"]}, True),
    ({"namespaces": ["fr*"]}, True),
    ({"namespaces": ["other", "front"]}, True),
    ({"namespaces": ["back"]}, False),
    ({"notNamespaces": ["front"]}, False),
    ({"notNamespaces": ["back"]}, True),
    ({"serviceAccounts": ["front/web"]}, True),
    ({"serviceAccounts": ["web"]}, False),  # bare name = the policy's namespace (back)
    ({"notServiceAccounts": ["front/web"]}, False),
    ({"ipBlocks": ["10.1.0.0/16"]}, True),
    ({"ipBlocks": ["10.1.0.5"]}, True),
    ({"ipBlocks": ["10.9.0.0/16"]}, False),
    ({"notIpBlocks": ["10.1.0.0/24"]}, False),
    ({"notIpBlocks": ["192.168.0.0/16"]}, True),
    ({"namespaces": ["front"], "ipBlocks": ["10.9.0.0/16"]}, False),  # fields AND
    ({"namespaces": ["front"], "ipBlocks": ["10.1.0.0/16"]}, True),
])
def test_source_fields(source: dict[str, Any], ok: bool) -> None:
    assert allowed([allow_src(**source)]) is ok


def test_bare_service_account_uses_policy_namespace() -> None:
    c = conn(f"spiffe://{TD}/ns/back/sa/web")
    assert allowed([allow_src(serviceAccounts=["web"])], c)


@pytest.mark.parametrize("source,ok", [
    ({"principals": ["*"]}, False),
    ({"namespaces": ["*"]}, False),
    ({"serviceAccounts": ["front/web"]}, False),
    ({"notPrincipals": ["*"]}, True),  # the documented "only plaintext" form
    ({"notNamespaces": ["front"]}, True),
    ({"ipBlocks": ["10.1.0.0/16"]}, True),
])
def test_identity_fields_and_plaintext(source: dict[str, Any], ok: bool) -> None:
    assert allowed([allow_src(**source)], conn(None)) is ok


def test_from_entries_or() -> None:
    policy = ap({"rules": [{"from": [{"source": {"namespaces": ["x"]}},
                                     {"source": {"namespaces": ["front"]}}]}]})
    assert allowed([policy])


# --- to and when ---------------------------------------------------------------------------
@pytest.mark.parametrize("op,ok", [
    ({"ports": ["9080"]}, True), ({"ports": [9080]}, True), ({"ports": ["80", "443"]}, False),
    ({"notPorts": ["9080"]}, False), ({"notPorts": ["80"]}, True),
])
def test_operation_ports(op: dict[str, Any], ok: bool) -> None:
    assert allowed([ap({"rules": [{"to": [{"operation": op}]}]})]) is ok


@pytest.mark.parametrize("cond,ok", [
    ({"key": "source.ip", "values": ["10.1.0.0/16"]}, True),
    ({"key": "source.ip", "notValues": ["10.1.0.5"]}, False),
    ({"key": "source.namespace", "values": ["front"]}, True),
    ({"key": "source.namespace", "values": ["back"]}, False),
    ({"key": "source.principal", "values": [f"{TD}/ns/front/sa/*"]}, True),
    ({"key": "source.principal", "notValues": ["*"]}, False),
    ({"key": "destination.ip", "values": ["10.2.0.7"]}, True),
    ({"key": "destination.ip", "values": ["10.2.1.0/24"]}, False),
    ({"key": "destination.port", "values": ["9080"]}, True),
    ({"key": "destination.port", "values": ["80"], "notValues": []}, False),
    ({"key": "destination.port", "values": ["9080"], "notValues": ["9080"]}, False),
])
def test_when(cond: dict[str, Any], ok: bool) -> None:
    assert allowed([ap({"rules": [{"when": [cond]}]})]) is ok


def test_when_conditions_and() -> None:
    rule = {"when": [{"key": "source.namespace", "values": ["front"]},
                     {"key": "destination.port", "values": ["80"]}]}
    assert not allowed([ap({"rules": [rule]})])


def test_any_rule_matches() -> None:
    policy = ap({"rules": [{"to": [{"operation": {"ports": ["1"]}}]},
                           {"from": [{"source": {"namespaces": ["front"]}}]}]})
    d = Evaluator([policy]).authorize(conn())
    assert d.allowed and "rule 1" in d.reason and d.policy == "back/p"


# --- order -------------------------------------------------------------------------------
def test_deny_beats_allow() -> None:
    allow = ap({"rules": [{}]}, name="allow-all")
    deny = ap({"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["front"]}}]}]},
              name="no-front")
    d = Evaluator([allow, deny]).authorize(conn())
    assert not d.allowed and d.policy == "back/no-front"
    assert Evaluator([allow, deny]).authorize(conn(f"spiffe://{TD}/ns/other/sa/x")).allowed


def test_allow_miss_denies() -> None:
    d = Evaluator([allow_src(namespaces=["other"])]).authorize(conn())
    assert not d.allowed and d.policy is None and "no ALLOW policy matched" in d.reason


# --- scope -------------------------------------------------------------------------------
def test_root_namespace_applies_mesh_wide_other_namespaces_do_not() -> None:
    deny_all = {"action": "DENY", "rules": [{}]}
    assert not allowed([ap(deny_all, ns="istio-system")])
    assert allowed([ap(deny_all, ns="elsewhere")])
    assert not Evaluator([ap(deny_all, ns="mesh-root")], root_namespace="mesh-root").authorize(conn()).allowed


def test_selector_narrows() -> None:
    sel = {"action": "DENY", "rules": [{}], "selector": {"matchLabels": {"app": "reviews"}}}
    assert not allowed([ap(sel)])
    assert allowed([ap(sel)], conn(labels={"app": "ratings"}))
    assert not allowed([ap(sel, ns="istio-system")])  # root + selector: matching workloads anywhere


def test_target_refs_are_for_waypoints() -> None:
    wp = ap({"targetRefs": [{"kind": "Service", "group": "", "name": "reviews"}], "rules": [{}]},
            name="wp")
    d = Evaluator([wp]).authorize(conn())
    assert d.allowed and "waypoint" in d.reason and "back/wp" in d.reason
    single = ap({"targetRef": {"kind": "Gateway", "name": "waypoint"}, "action": "DENY", "rules": [{}]})
    assert allowed([single])


@pytest.mark.parametrize("action", ["AUDIT", "CUSTOM"])
def test_audit_custom_ignored(action: str) -> None:
    d = Evaluator([ap({"action": action, "rules": [{}]})]).authorize(conn())
    assert d.allowed and action in d.reason


# --- L7 ----------------------------------------------------------------------------------
def test_allow_rule_with_l7_drops_out() -> None:
    l7 = ap({"rules": [{"from": [{"source": {"namespaces": ["front"]}}],
                        "to": [{"operation": {"methods": ["GET"]}}]}]})
    d = Evaluator([l7]).authorize(conn())
    assert not d.allowed and "L7" in d.reason
    both = ap({"rules": [{"to": [{"operation": {"paths": ["/x"]}}]},
                         {"from": [{"source": {"namespaces": ["front"]}}]}]})
    assert allowed([both])
    assert not allowed([ap({"rules": [{"when": [{"key": "request.headers[x]", "values": ["1"]}]}]})])
    assert not allowed([allow_src(requestPrincipals=["*"])])


def test_deny_rule_with_l7_is_broadened() -> None:
    deny = ap({"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["front"]}}],
                                            "to": [{"operation": {"methods": ["POST"]}}]}]})
    assert not allowed([deny])
    assert allowed([deny], conn(f"spiffe://{TD}/ns/other/sa/x"))  # L4 parts still narrow it
    only_l7 = ap({"action": "DENY", "rules": [{"when": [{"key": "request.auth.claims[iss]",
                                                          "values": ["x"]}]}]})
    assert not allowed([only_l7])


# --- PeerAuthentication ------------------------------------------------------------------
def mode(policies: list[Policy], ns: str = "back", labels: dict[str, str] | None = None,
         port: int = 9080) -> str:
    return Evaluator(policies).peer_auth_mode(ns, LABELS if labels is None else labels, port)


def test_pa_default_permissive() -> None:
    assert mode([]) == "PERMISSIVE"


def test_pa_mesh_namespace_workload_override() -> None:
    mesh = pa("STRICT", ns="istio-system", name="mesh")
    assert mode([mesh]) == "STRICT"
    nsp = pa("PERMISSIVE", name="ns")
    assert mode([mesh, nsp]) == "PERMISSIVE"
    wl = pa("STRICT", name="wl", selector={"matchLabels": {"app": "reviews"}})
    assert mode([mesh, nsp, wl]) == "STRICT"
    assert mode([mesh, nsp, wl], labels={"app": "ratings"}) == "PERMISSIVE"
    assert mode([nsp], ns="other") == "PERMISSIVE"
    assert mode([pa("STRICT", name="ns")], ns="other") == "PERMISSIVE"  # other namespace's policy


def test_pa_unset_inherits() -> None:
    mesh = pa("STRICT", ns="istio-system")
    assert mode([mesh, pa("UNSET", name="ns")]) == "STRICT"
    assert mode([mesh, pa(None, name="ns2")]) == "STRICT"
    wl = pa("UNSET", selector={"matchLabels": {"app": "reviews"}})
    assert mode([mesh, wl]) == "STRICT"


def test_pa_port_level() -> None:
    wl = pa("STRICT", selector={"matchLabels": {"app": "reviews"}},
            portLevelMtls={9080: {"mode": "PERMISSIVE"}, "8443": {"mode": "UNSET"}})
    assert mode([wl], port=9080) == "PERMISSIVE"
    assert mode([wl], port=8443) == "STRICT"
    assert mode([wl], port=1234) == "STRICT"
    no_sel = pa("PERMISSIVE", portLevelMtls={9080: {"mode": "STRICT"}})
    assert mode([no_sel], port=9080) == "PERMISSIVE"  # portLevelMtls needs a selector


def test_pa_disable_ignored_in_ambient() -> None:
    ev = Evaluator([pa("STRICT", ns="istio-system"), pa("DISABLE", name="off")])
    res = ev.peer_auth("back", LABELS, 9080)
    assert res.mode == "PERMISSIVE" and "ignored in ambient" in res.reason and res.policy == "back/off"


def test_pa_root_namespace_selector_is_workload_scope() -> None:
    sel = pa("STRICT", ns="istio-system", selector={"matchLabels": {"app": "reviews"}})
    assert mode([sel]) == "PERMISSIVE"
    assert mode([sel], ns="istio-system") == "STRICT"


def test_strict_denies_plaintext_only() -> None:
    ev = Evaluator([pa("STRICT", name="strict")])
    d = ev.admit_plaintext(conn(None))
    assert not d.allowed and d.policy == "back/strict" and "plaintext" in d.reason
    assert ev.admit_plaintext(conn()).allowed
    assert Evaluator([pa("PERMISSIVE")]).admit_plaintext(conn(None)).allowed


def test_admit_combines_authz() -> None:
    ev = Evaluator([pa("PERMISSIVE"), allow_src(namespaces=["front"])])
    assert ev.admit_plaintext(conn()).allowed
    assert not ev.admit_plaintext(conn(None)).allowed
