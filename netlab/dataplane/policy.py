"""L4 policy as the server-side ztunnel applies it: PeerAuthentication and AuthorizationPolicy.

Pure functions over the raw specs of the snapshot's `Policy` objects, so the same answer
can be tested without sockets and explained in a report. Every `Decision` carries a
reason in plain words, because a lab's verdict must say *which* policy refused a
connection and why a policy that looks relevant did not count (waypoint-only, L7, ...).

Semantics follow mesh-facts §6 and Istio's ambient translation; where netlab has to
choose, the choice is written in docs/policy-telemetry.md.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

from netlab import mesh
from netlab.snapshot import Policy, Workload

Mode = Literal["STRICT", "PERMISSIVE"]

# Fields ztunnel cannot see at L4. In an ALLOW rule they make the rule match nothing;
# in a DENY rule they are treated as matching (the rule gets broader, never narrower).
L7_SOURCE_FIELDS = frozenset({"requestPrincipals", "notRequestPrincipals",
                              "remoteIpBlocks", "notRemoteIpBlocks"})
L7_OPERATION_FIELDS = frozenset({"methods", "notMethods", "paths", "notPaths",
                                 "hosts", "notHosts"})
L4_WHEN_KEYS = frozenset({"source.ip", "source.namespace", "source.principal",
                          "destination.ip", "destination.port"})


@dataclass(frozen=True)
class Connection:
    """What the destination ztunnel knows about one inbound connection."""

    src_ip: str
    src_identity: str | None  # spiffe://<td>/ns/<ns>/sa/<sa>; None for plaintext
    dst_ip: str
    dst_port: int
    dst_namespace: str
    dst_labels: dict = field(hash=False)
    dst_service_account: str

    @classmethod
    def to_workload(cls, src_ip: str, src_identity: str | None, dst_ip: str, dst_port: int,
                    dst: Workload) -> "Connection":
        """A connection to `dst`, the workload the server-side proxy serves."""
        return cls(src_ip=src_ip, src_identity=src_identity, dst_ip=dst_ip, dst_port=dst_port,
                   dst_namespace=dst.namespace, dst_labels=dict(dst.labels),
                   dst_service_account=dst.service_account)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    policy: str | None  # "<namespace>/<name>" of the deciding policy, if one decided


@dataclass(frozen=True)
class PeerAuthResult:
    """The effective mTLS mode plus where it came from (for reports)."""

    mode: Mode
    reason: str
    policy: str | None


@dataclass(frozen=True)
class _Peer:
    """The parts of a SPIFFE identity that policy fields match on."""

    principal: str  # without spiffe://
    namespace: str
    service_account: str


def parse_identity(identity: str | None) -> _Peer | None:
    """Split spiffe://td/ns/N/sa/S (the scheme may be left off); anything else is no identity."""
    if not identity:
        return None
    bare = identity.removeprefix(mesh.SPIFFE_SCHEME)
    parts = mesh.parse_spiffe_uri(mesh.SPIFFE_SCHEME + bare)
    if parts is None:
        return None
    return _Peer(bare, parts[1], parts[2])


def wildcard_match(pattern: str, value: str) -> bool:
    """Istio string match: exact, `*` (any non-empty), `prefix*` or `*suffix`."""
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def ip_match(block: str, ip: str) -> bool:
    """`block` is a CIDR or a bare address; a malformed value matches nothing."""
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(block, strict=False)
    except ValueError:
        return False


def _name(res: Policy) -> str:
    return f"{res.namespace}/{res.name}"


def _match_labels(spec: dict[str, Any]) -> dict[str, str]:
    return dict((spec.get("selector") or {}).get("matchLabels") or {})


def _selects(spec: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in _match_labels(spec).items())


def _any_or_none(values: Iterable[str] | None, pred: Any) -> bool | None:
    """None when the field is unset (so it does not constrain), else whether any value hits."""
    vals = list(values or [])
    return None if not vals else any(pred(str(v)) for v in vals)


class PeerPredicates:
    """What the L4 matcher here and the waypoint's L7 one (netlab.dataplane.l7.authz) share:
    a rule's from/to/when logic, and the `from.source` fields that name the peer's identity
    (never true without an identity). Subclasses say what `source`, `operation` and
    `condition` mean at their layer."""

    def __init__(self, src_identity: str | None, policy_ns: str) -> None:
        self.peer = parse_identity(src_identity)
        self.policy_ns = policy_ns

    def principal(self, pat: str) -> bool:
        return self.peer is not None and wildcard_match(pat.removeprefix(mesh.SPIFFE_SCHEME), self.peer.principal)

    def namespace(self, pat: str) -> bool:
        return self.peer is not None and wildcard_match(pat, self.peer.namespace)

    def service_account(self, ref: str) -> bool:
        """`ns/sa`, or a bare `sa` in the policy's own namespace."""
        ns, _, sa = ref.rpartition("/")
        ns = ns or self.policy_ns
        return self.peer is not None and (self.peer.namespace, self.peer.service_account) == (ns, sa)

    def source(self, src: dict[str, Any]) -> bool:
        raise NotImplementedError

    def operation(self, op: dict[str, Any]) -> bool:
        raise NotImplementedError

    def condition(self, cond: dict[str, Any]) -> bool:
        raise NotImplementedError

    def rule(self, rule: dict[str, Any]) -> bool:
        froms = [f.get("source") or {} for f in rule.get("from") or []]
        tos = [t.get("operation") or {} for t in rule.get("to") or []]
        if froms and not any(self.source(s) for s in froms):
            return False
        if tos and not any(self.operation(o) for o in tos):
            return False
        return all(self.condition(c) for c in rule.get("when") or [])


class _Matcher(PeerPredicates):
    """Matches one rule against one connection; knows the policy's namespace and action."""

    def __init__(self, conn: Connection, policy_ns: str, deny: bool) -> None:
        super().__init__(conn.src_identity, policy_ns)
        self.conn = conn
        self.deny = deny

    def port(self, value: str) -> bool:
        return value.strip() == str(self.conn.dst_port)

    # --- rule parts ------------------------------------------------------------------
    def _fields(self, spec: dict[str, Any], table: dict[str, Any]) -> bool:
        for key, pred in table.items():
            hit = _any_or_none(spec.get(key), pred)
            if hit is not None and not hit:
                return False
            miss = _any_or_none(spec.get("not" + key[0].upper() + key[1:]), pred)
            if miss:
                return False
        return True

    def source(self, src: dict[str, Any]) -> bool:
        if self._has_l7(src, L7_SOURCE_FIELDS):
            return False
        return self._fields(src, {
            "principals": self.principal,
            "namespaces": self.namespace,
            "serviceAccounts": self.service_account,
            "ipBlocks": lambda b: ip_match(b, self.conn.src_ip),
        })

    def operation(self, op: dict[str, Any]) -> bool:
        if self._has_l7(op, L7_OPERATION_FIELDS):
            return False
        return self._fields(op, {"ports": self.port})

    def condition(self, cond: dict[str, Any]) -> bool:
        key = str(cond.get("key", ""))
        if key not in L4_WHEN_KEYS:
            return self.deny  # L7 condition: see _has_l7
        pred = {
            "source.ip": lambda v: ip_match(v, self.conn.src_ip),
            "source.namespace": self.namespace,
            "source.principal": self.principal,
            "destination.ip": lambda v: ip_match(v, self.conn.dst_ip),
            "destination.port": self.port,
        }[key]
        hit = _any_or_none(cond.get("values"), pred)
        miss = _any_or_none(cond.get("notValues"), pred)
        return hit is not False and not miss

    def _has_l7(self, spec: dict[str, Any], l7: frozenset[str]) -> bool:
        """For ALLOW an L7 field kills the match; for DENY it is simply not checked."""
        return not self.deny and any(spec.get(k) for k in l7)



def rule_has_l7(rule: dict[str, Any]) -> bool:
    """Whether ztunnel must drop (ALLOW) or broaden (DENY) this rule."""
    srcs = [f.get("source") or {} for f in rule.get("from") or []]
    ops = [t.get("operation") or {} for t in rule.get("to") or []]
    return (any(s.get(k) for s in srcs for k in L7_SOURCE_FIELDS)
            or any(o.get(k) for o in ops for k in L7_OPERATION_FIELDS)
            or any(str(c.get("key", "")) not in L4_WHEN_KEYS for c in rule.get("when") or []))


class Evaluator:
    """The policy view of one destination ztunnel, built once per config change."""

    def __init__(self, resources: Sequence[Policy], root_namespace: str = mesh.ROOT_NAMESPACE) -> None:
        self.root_namespace = root_namespace
        self.peer_auths = [r for r in resources if r.kind == "PeerAuthentication"]
        self.authz = [r for r in resources if r.kind == "AuthorizationPolicy"]

    # --- PeerAuthentication ---------------------------------------------------------
    def peer_auth(self, namespace: str, labels: dict[str, str], port: int) -> PeerAuthResult:
        """Walk mesh → namespace → workload; a set mode overrides, UNSET inherits."""
        mode: Mode = "PERMISSIVE"
        reason, policy = "no PeerAuthentication sets a mode: default PERMISSIVE", None
        for scope, res in self._peer_auth_chain(namespace, labels):
            spec = res.spec or {}
            raw = str((spec.get("mtls") or {}).get("mode") or "UNSET").upper()
            where = f"{scope} PeerAuthentication {_name(res)}"
            if scope == "workload":
                port_mode = self._port_mode(spec, port)
                if port_mode not in (None, "UNSET"):
                    raw, where = port_mode, f"{where} portLevelMtls[{port}]"
            if raw == "UNSET":
                continue
            policy = _name(res)
            if raw == "DISABLE":
                mode, reason = "PERMISSIVE", f"{where} says DISABLE, ignored in ambient: PERMISSIVE"
            elif raw in ("STRICT", "PERMISSIVE"):
                mode, reason = raw, f"{where} sets {raw}"  # type: ignore[assignment]
            else:
                reason = f"{where} has unknown mode {raw!r}: kept {mode}"
        return PeerAuthResult(mode, reason, policy)

    def peer_auth_mode(self, namespace: str, labels: dict[str, str], port: int) -> Mode:
        return self.peer_auth(namespace, labels, port).mode

    def strict_policy_key(self, namespace: str, labels: dict[str, str]) -> str:
        """The ztunnel policy a STRICT refusal names, as istiod converts PeerAuthentication
        (pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go): a workload
        policy with `portLevelMtls` becomes `<ns>/converted_peer_authentication_<name>`;
        any other STRICT is the static `<root>/istio_converted_static_strict`."""
        for scope, res in self._peer_auth_chain(namespace, labels):
            if scope == "workload" and (res.spec or {}).get("portLevelMtls"):
                return f"{res.namespace}/converted_peer_authentication_{res.name}"
        return f"{self.root_namespace}/istio_converted_static_strict"

    def _peer_auth_chain(self, namespace: str, labels: dict[str, str]) -> list[tuple[str, Policy]]:
        """At most one policy per scope; with several, the first declared wins (Istio: oldest)."""
        def first(pred: Any) -> Policy | None:
            return next((r for r in self.peer_auths if pred(r)), None)

        root = self.root_namespace
        chain = [("mesh", first(lambda r: r.namespace == root and not _match_labels(r.spec or {})))]
        if namespace != root:
            chain.append(("namespace", first(
                lambda r: r.namespace == namespace and not _match_labels(r.spec or {}))))
        chain.append(("workload", first(lambda r: r.namespace == namespace
                                        and _match_labels(r.spec or {})
                                        and _selects(r.spec or {}, labels))))
        return [(scope, res) for scope, res in chain if res is not None]

    @staticmethod
    def _port_mode(spec: dict[str, Any], port: int) -> str | None:
        levels = spec.get("portLevelMtls") or {}
        entry = levels.get(port, levels.get(str(port)))
        return None if entry is None else str((entry or {}).get("mode") or "UNSET").upper()

    # --- AuthorizationPolicy --------------------------------------------------------
    def authorize(self, conn: Connection) -> Decision:
        """§6 order: matching DENY → deny; no ALLOW applies → allow; matching ALLOW → allow; else deny."""
        notes: list[str] = []
        allows: list[Policy] = []
        denies: list[Policy] = []
        for res in self.authz:
            if not self._in_scope(res, conn):
                continue
            spec = res.spec or {}
            if spec.get("targetRefs") or spec.get("targetRef"):
                notes.append(f"{_name(res)} uses targetRefs: a waypoint applies it, not ztunnel")
                continue
            action = str(spec.get("action") or "ALLOW").upper()
            if action == "ALLOW":
                allows.append(res)
            elif action == "DENY":
                denies.append(res)
            else:
                notes.append(f"{_name(res)} has action {action}: ignored at L4 by netlab's ztunnel")
        for res in denies:
            idx = self._matching_rule(res, conn, deny=True)
            if idx is not None:
                return Decision(False, _join(f"denied by DENY policy {_name(res)} rule {idx}", notes),
                                _name(res))
        if not allows:
            return Decision(True, _join("allowed: no ALLOW policy applies to the workload", notes), None)
        for res in allows:
            idx = self._matching_rule(res, conn, deny=False)
            if idx is not None:
                return Decision(True, _join(f"allowed by ALLOW policy {_name(res)} rule {idx}", notes),
                                _name(res))
        for res in allows:
            dropped = [i for i, r in enumerate(res.spec.get("rules") or []) if rule_has_l7(r or {})]
            if dropped:
                notes.append(f"{_name(res)} rules {dropped} use L7 fields and drop out at L4")
        names = ", ".join(_name(r) for r in allows)
        return Decision(False, _join(f"denied: no ALLOW policy matched (ALLOW policies: {names})", notes),
                        None)

    def _in_scope(self, res: Policy, conn: Connection) -> bool:
        if res.namespace not in (self.root_namespace, conn.dst_namespace):
            return False
        return _selects(res.spec or {}, conn.dst_labels)

    def _matching_rule(self, res: Policy, conn: Connection, deny: bool) -> int | None:
        """Index of the first matching rule. No rules at all matches nothing (`spec: {}`)."""
        matcher = _Matcher(conn, res.namespace, deny)
        for i, rule in enumerate((res.spec or {}).get("rules") or []):
            if matcher.rule(rule or {}):
                return i
        return None

    # --- both -------------------------------------------------------------------------
    def admit_plaintext(self, conn: Connection) -> Decision:
        """PeerAuthentication STRICT acts as a DENY for identity-less connections, ahead of authz."""
        if conn.src_identity is None:
            pa = self.peer_auth(conn.dst_namespace, conn.dst_labels, conn.dst_port)
            if pa.mode == "STRICT":
                return Decision(False, f"denied: plaintext connection and {pa.reason}", pa.policy)
        return self.authorize(conn)

    admit = admit_plaintext


def _join(head: str, notes: list[str]) -> str:
    return head if not notes else f"{head} ({'; '.join(notes)})"
