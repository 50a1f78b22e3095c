"""The typed config that flows from plan to the dataplane: one shape of each mesh object.

Why one shape: the planner describes a workload once (`Workload`), and the same class
is what a proxy loads from its config file, what telemetry labels and what policy
matches. Real Istio has istiod push xDS/WDS to each proxy; a lab is fixed once `up`
finishes, so those pushes collapse into one `ProxySnapshot` per proxy process, written
as JSON by the planner and read back by the proxy.

JSON goes through `to_json`/`load` only: dataclasses to objects by field name and back
by field name, never by position, so adding a field cannot shift another. A key the
class does not have, or a required one missing, is an error naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

from netlab import mesh

T = TypeVar("T")

Capture = Literal["redirect", "tproxy"]


class SnapshotError(ValueError):
    """A config snapshot does not match its classes (a key missing, unknown or mistyped)."""


# -- mesh objects ---------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One pod as the mesh sees it (ztunnel's WDS Workload, Envoy's node metadata)."""

    namespace: str
    name: str  # the pod's name: "<deployment>-<i>"
    service_account: str = "default"
    deployment: str = ""  # the workload name telemetry reports; "" for a bare pod
    node: str = ""
    ip: str = ""
    netns: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    images: tuple[str, ...] = ()
    host_veth: str = ""  # the node-side end of the pod's veth
    mode: str = ""  # the mesh mode that enrolled the pod ("ambient"); "" when none did
    tunnel: bool = False  # networking.istio.io/tunnel: http, the pod accepts HBONE itself
    waypoint: str = ""  # FQDN of the waypoint Service its traffic goes through (waypoint-for workload/all)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def identity(self, trust_domain: str) -> str:
        return mesh.spiffe_uri(trust_domain, self.namespace, self.service_account)

    @property
    def workload_name(self) -> str:
        """What telemetry and Kiali call the workload: the deployment, else the pod."""
        return self.deployment or self.name

    @property
    def canonical_service(self) -> str:
        """Istio's label precedence (pilot/pkg/model/telemetry.go)."""
        return (self.labels.get("service.istio.io/canonical-name")
                or self.labels.get("app.kubernetes.io/name") or self.labels.get("app")
                or self.workload_name)

    @property
    def canonical_revision(self) -> str:
        return (self.labels.get("service.istio.io/canonical-revision")
                or self.labels.get("app.kubernetes.io/version") or self.labels.get("version")
                or "latest")

    @property
    def speaks_hbone(self) -> bool:
        """ztunnel tunnels to it: an ambient pod, or a sidecar that listens for HBONE."""
        return self.mode == "ambient" or self.tunnel


@dataclass(frozen=True)
class Endpoint:
    pod: str  # "ns/name"
    ip: str
    port: int  # the resolved target port


@dataclass(frozen=True)
class ServicePort:
    port: int
    name: str | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    vip: str
    ports: tuple[ServicePort, ...] = ()
    domain: str = mesh.DNS_DOMAIN
    waypoint: str = ""  # FQDN of the waypoint Service its traffic goes through (waypoint-for service/all)

    @property
    def fqdn(self) -> str:
        return mesh.service_fqdn(self.name, self.namespace, self.domain)

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)


@dataclass(frozen=True)
class Policy:
    """An AuthorizationPolicy or PeerAuthentication, its spec kept whole for the evaluator."""

    kind: str
    namespace: str
    name: str
    spec: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpRoute:
    """A Gateway API HTTPRoute, its spec kept whole for the waypoint's route engine."""

    namespace: str
    name: str
    spec: dict[str, Any] = field(default_factory=dict)


# -- one proxy's snapshot ----------------------------------------------------------------


@dataclass(frozen=True)
class CertAuthority:
    url: str  # https://IP:PORT of the CA API
    dir: str  # the lab CA's directory (the bootstrap certificate is minted from it)
    root_cert: str


@dataclass(frozen=True)
class Bootstrap:
    """Where the proxy keeps its node-bound bootstrap credentials."""

    cert: str
    key: str


@dataclass(frozen=True)
class DnsProxy:
    upstream: str | None  # "ip:port" of the pods' resolver, for names the proxy does not know
    domain: str = mesh.DNS_DOMAIN
    forward_in_pod: bool = True  # forward from the pod netns (the capture exempts our mark)


@dataclass(frozen=True)
class ProxySnapshot:
    """Everything one proxy process knows about the lab (the xDS stand-in)."""

    proxy: str  # "ztunnel"
    node: str
    trust_domain: str
    capture: Capture  # the Istio profile's: how traffic reaches the pod listeners
    workdir: str
    ca: CertAuthority
    bootstrap: Bootstrap
    dns: DnsProxy
    workloads: tuple[Workload, ...] = ()
    services: tuple[Service, ...] = ()
    policies: tuple[Policy, ...] = ()
    routes: tuple[HttpRoute, ...] = ()  # the waypoint's HTTPRoutes
    waypoint: str = ""  # for proxy "waypoint": FQDN of the waypoint Service this process is

    def to_json(self) -> str:
        return to_json(self)

    @classmethod
    def load(cls, path: str) -> "ProxySnapshot":
        with open(path) as f:
            return from_json(cls, f.read())

    # Lookups as ztunnel's state keeps them: workloads by IP, services by VIP:port.
    def local_workloads(self, mode: str) -> list[Workload]:
        """The pods of `mode` this proxy serves: on its node."""
        return [w for w in self.workloads if w.mode == mode and w.node == self.node]

    def workload_by_ip(self, ip: str) -> Workload | None:
        return next((w for w in self.workloads if w.ip == ip), None)

    def workload_by_key(self, key: str) -> Workload | None:
        return next((w for w in self.workloads if w.key == key), None)

    def service_by_fqdn(self, fqdn: str) -> Service | None:
        return next((s for s in self.services if s.fqdn == fqdn), None)

    def service_at(self, ip: str, port: int) -> tuple[Service, ServicePort] | None:
        for s in self.services:
            sp = s.port(port) if s.vip == ip else None
            if sp is not None:
                return s, sp
        return None

    def inbound_service(self, w: Workload, port: int) -> Service | None:
        """The Service an inbound connection is counted under, as ztunnel guesses it.

        ztunnel's `guess_inbound_service`: the first Service of the destination workload
        whose (resolved) target port is the port connected to; None if there is none.
        """
        return next((s for s in self.services for p in s.ports
                     if any(e.pod == w.key and e.port == port for e in p.endpoints)), None)


# -- JSON by field name ------------------------------------------------------------------


_FIELDS: dict[type, tuple[str, ...]] = {}


def to_dict(obj: Any) -> Any:
    """`dataclasses.asdict` for this data, without its deep copies (every leaf here is an
    immutable str, number, bool or None): a 200-pod sidecar mesh plans 200 snapshots of
    ~140 KiB each, and asdict plus an indented dump took most of `up`'s planning."""
    cls = type(obj)
    names = _FIELDS.get(cls)
    if names is None and dataclasses.is_dataclass(cls):
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    if names is not None:
        return {n: to_dict(getattr(obj, n)) for n in names}
    if cls is list or cls is tuple:
        return [to_dict(v) for v in obj]
    if cls is dict:
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def to_json(obj: Any) -> str:
    """Compact, so the C encoder writes it (an indented dump is Python's own, ~10x slower);
    `netlab proxy-config` and `ztunnel-config` are how a person reads these."""
    return json.dumps(to_dict(obj), separators=(",", ":"))


def from_json(cls: type[T], text: str) -> T:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise SnapshotError(f"not JSON: {e}") from e
    return from_dict(cls, raw)


def from_dict(cls: type[T], raw: Any, where: str = "") -> T:
    return _decode(cls, raw, where or cls.__name__)


def _decode(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _decode_dataclass(tp, value, where)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(inner, value, where)
    if origin is Literal:
        if value not in args:
            raise SnapshotError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        _expect(value, list, where)
        return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _expect(value, dict, where)
        return {k: _decode(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise SnapshotError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
    return value


@functools.cache
def _shape(cls: type) -> tuple[dict[str, Any], frozenset[str], tuple[str, ...]]:
    """A dataclass' field types, its field names and the ones without a default, worked
    out once per class: typing.get_type_hints evaluates every annotation string anew, and
    a sidecar's snapshot has about 500 dataclass values (it was 29 ms of each start)."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    required = tuple(f.name for f in fields
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    return {f.name: hints[f.name] for f in fields}, frozenset(f.name for f in fields), required


def prime(cls: type) -> int:
    """Work out the shape of `cls` and of every dataclass its fields can hold, now; how
    many classes that was. For the process zygote (kernel/zygote.py): done there once,
    the shapes are shared by every proxy it forks, which would otherwise each evaluate
    every annotation again (`_shape`) and copy the pages that writes."""
    seen: set[type] = set()

    def walk(tp: Any) -> None:
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if tp not in seen:
                seen.add(tp)
                for field_type in _shape(tp)[0].values():
                    walk(field_type)
            return
        for arg in typing.get_args(tp):
            walk(arg)

    walk(cls)
    return len(seen)


def _decode_dataclass(cls: type, value: Any, where: str) -> Any:
    _expect(value, dict, where)
    hints, names, required = _shape(cls)
    unknown = sorted(set(value) - names)
    if unknown:
        raise SnapshotError(f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}")
    missing = [n for n in required if n not in value]
    if missing:
        raise SnapshotError(f"{where}: missing key(s) {', '.join(missing)} for {cls.__name__}")
    return cls(**{n: _decode(hints[n], v, f"{where}.{n}") for n, v in value.items()})


def _expect(value: Any, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        raise SnapshotError(f"{where}: expected {'a list' if kind is list else 'an object'}, "
                            f"got {type(value).__name__}")
