"""L7 AuthorizationPolicy as a waypoint applies it (mesh-facts §6, mesh-facts-2 §C1, §C4).

Which policies: those with `targetRefs` (or the older `targetRef`) naming, in the policy's
own namespace, the Service the request is for (`kind: Service`, group "") or the waypoint
itself (`kind: Gateway`, group `gateway.networking.k8s.io`). Policies with a `selector`,
or namespace-wide ones, are the destination ztunnel's, even behind a waypoint.

Order (Istio's RBAC filters: CUSTOM, then DENY, then ALLOW): any matching DENY rule
denies; with no ALLOW policy the request is allowed; a matching ALLOW rule allows;
otherwise it is denied. `AUDIT` changes nothing; `CUSTOM` (ext-authz) is not modelled and
is reported in the decision's notes.

A denial is Envoy's HTTP RBAC local reply: 403, body `RBAC: access denied`, response
code details `rbac_access_denied_matched_policy[<policy>]` where `<policy>` is Istio's
`ns[<ns>]-policy[<name>]-rule[<i>]` for a DENY match and `none` when no ALLOW matched;
no response flag (envoyproxy/envoy `source/extensions/filters/http/rbac/rbac_filter.cc`,
envoy#12912, envoy#21197; istio `pilot/pkg/security/authz/builder/builder.go`).

Matching: values within a field are ORed, fields within a `source`/`operation` ANDed,
`from` and `to` entries ORed, `when` conditions ANDed, and a `not*` field that hits makes
the part fail. `requestPrincipals` and `request.auth.*` need a JWT (RequestAuthentication
is not modelled) and so never match. `paths` compare the path without the query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from netlab.dataplane.policy import PeerPredicates, ip_match, wildcard_match
from netlab.snapshot import Policy

DENIED_STATUS = 403
DENIED_BODY = b"RBAC: access denied"
DETAILS_PREFIX = "rbac_access_denied_matched_policy"
GATEWAY_GROUP = "gateway.networking.k8s.io"


@dataclass(frozen=True)
class L7Request:
    """What the waypoint knows about one request when it authorizes it."""

    method: str
    path: str  # the request target; the query is ignored for `paths`
    host: str  # :authority / Host
    headers: dict[str, str] = field(hash=False, default_factory=dict)  # lower-case names
    src_ip: str = ""
    src_identity: str | None = None  # spiffe://... of the client (the HBONE peer)
    dst_ip: str = ""  # the original destination (the Service VIP, or a pod IP)
    dst_port: int = 0

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Target:
    """What a request is addressed to, in targetRefs' terms."""

    service_namespace: str | None  # the Service's (None for a request to a pod IP)
    service_name: str | None
    waypoint_namespace: str
    waypoint_name: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    details: str  # Envoy's response code details on denial; "" when allowed
    reason: str  # in plain words, for logs and reports
    policy: str | None = None  # "ns/name" of the deciding policy


def _refs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    refs = list(spec.get("targetRefs") or [])
    if spec.get("targetRef"):
        refs.append(spec["targetRef"])
    return refs


def applies(res: Policy, target: Target) -> bool:
    """Whether the waypoint applies `res` to a request for `target`."""
    for ref in _refs(res.spec or {}):
        kind, group, name = ref.get("kind"), ref.get("group") or "", ref.get("name")
        if kind == "Service" and group in ("", "core") and res.namespace == target.service_namespace \
                and name == target.service_name:
            return True
        if kind == "Gateway" and group == GATEWAY_GROUP and res.namespace == target.waypoint_namespace \
                and name == target.waypoint_name:
            return True
    return False


def policy_name(res: Policy, rule: int) -> str:
    """Istio's name for an RBAC policy built from one rule."""
    return f"ns[{res.namespace}]-policy[{res.name}]-rule[{rule}]"


def _hits(values: Iterable[Any] | None, pred: Callable[[str], bool]) -> bool | None:
    vals = [str(v) for v in values or []]
    return None if not vals else any(pred(v) for v in vals)


def _fields(spec: dict[str, Any], table: dict[str, Callable[[str], bool]]) -> bool:
    for key, pred in table.items():
        if _hits(spec.get(key), pred) is False:
            return False
        if _hits(spec.get("not" + key[0].upper() + key[1:]), pred):
            return False
    return True


class _Matcher(PeerPredicates):
    def __init__(self, req: L7Request, policy_ns: str) -> None:
        super().__init__(req.src_identity, policy_ns)
        self.req = req

    def host(self, pat: str) -> bool:
        host = self.req.host.lower()
        bare = host.rsplit(":", 1)[0] if host.rsplit(":", 1)[-1].isdigit() else host
        return wildcard_match(pat.lower(), host) or wildcard_match(pat.lower(), bare)

    def path(self, pat: str) -> bool:
        return wildcard_match(pat, self.req.path.split("?", 1)[0].split("#", 1)[0])

    def port(self, value: str) -> bool:
        return value.strip() == str(self.req.dst_port)

    def source(self, src: dict[str, Any]) -> bool:
        return _fields(src, {
            "principals": self.principal, "namespaces": self.namespace,
            "serviceAccounts": self.service_account,
            "ipBlocks": lambda b: ip_match(b, self.req.src_ip),
            "remoteIpBlocks": lambda b: ip_match(b, self.req.src_ip),
            "requestPrincipals": lambda _: False,  # no JWT without RequestAuthentication
        })

    def operation(self, op: dict[str, Any]) -> bool:
        return _fields(op, {"hosts": self.host, "ports": self.port,
                            "methods": lambda m: m == self.req.method, "paths": self.path})

    def condition(self, cond: dict[str, Any]) -> bool:
        key = str(cond.get("key", ""))
        pred: Callable[[str], bool]
        if key.startswith("request.headers[") and key.endswith("]"):
            value = self.req.header(key[len("request.headers["):-1])
            pred = (lambda v: value is not None and wildcard_match(v, value))  # noqa: E731
        else:
            pred = {
                "source.ip": lambda v: ip_match(v, self.req.src_ip),
                "remote.ip": lambda v: ip_match(v, self.req.src_ip),
                "source.namespace": self.namespace,
                "source.principal": self.principal,
                "destination.ip": lambda v: ip_match(v, self.req.dst_ip),
                "destination.port": self.port,
            }.get(key, lambda _: False)  # request.auth.*, connection.sni, ...: unknown here
        hit, miss = _hits(cond.get("values"), pred), _hits(cond.get("notValues"), pred)
        return hit is not False and not miss



def matching_rule(res: Policy, req: L7Request) -> int | None:
    """Index of the first rule of `res` that matches; no rules at all match nothing."""
    m = _Matcher(req, res.namespace)
    for i, rule in enumerate((res.spec or {}).get("rules") or []):
        if m.rule(rule or {}):
            return i
    return None


def authorize(policies: Sequence[Policy], target: Target, req: L7Request) -> Decision:
    """Istio's order over the AuthorizationPolicies that target this request."""
    mine = [p for p in policies if p.kind == "AuthorizationPolicy" and applies(p, target)]
    by_action: dict[str, list[Policy]] = {}
    for p in mine:
        by_action.setdefault(str((p.spec or {}).get("action") or "ALLOW").upper(), []).append(p)
    notes = [f"{p.namespace}/{p.name}: CUSTOM (ext-authz) is not modelled, ignored"
             for p in by_action.get("CUSTOM", [])]
    for p in by_action.get("DENY", []):
        i = matching_rule(p, req)
        if i is not None:
            return Decision(False, f"{DETAILS_PREFIX}[{policy_name(p, i)}]",
                            _join(f"denied by DENY policy {p.namespace}/{p.name} rule {i}", notes),
                            f"{p.namespace}/{p.name}")
    allows = by_action.get("ALLOW", [])
    if not allows:
        return Decision(True, "", _join("allowed: no ALLOW policy targets it", notes))
    for p in allows:
        i = matching_rule(p, req)
        if i is not None:
            return Decision(True, "", _join(f"allowed by ALLOW policy {p.namespace}/{p.name} rule {i}", notes),
                            f"{p.namespace}/{p.name}")
    names = ", ".join(f"{p.namespace}/{p.name}" for p in allows)
    return Decision(False, f"{DETAILS_PREFIX}[none]", _join(f"denied: no ALLOW policy matched ({names})", notes))


def _join(head: str, notes: list[str]) -> str:
    return head if not notes else f"{head} ({'; '.join(notes)})"
