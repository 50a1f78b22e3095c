"""The lab model: what a topology file means, independent of YAML and of the kernel.

The parser (`netlab.topology`) builds these objects; the planner (`netlab.plan`) reads
them. Nothing here touches the kernel, so every layer can share and test it without root.
Field names follow Kubernetes where a Kubernetes object exists, so a reader who knows
`kubectl get -o yaml` recognises them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from netlab import mesh

IstioVersion = Literal["1.23", "1.24+"]
IstioInstallProfile = Literal["ambient", "default"]  # istioctl/Helm profile the mesh was installed with

# Built-in application images. Anything else needs a `command:`.
BUILTIN_IMAGES = (
    "netlab/http-echo",
    "netlab/tcp-echo",
    "netlab/sleep",
    "netlab/reverse-proxy",
    "netlab/prometheus",  # Debian's real Prometheus (netlab/plan/prometheus_app.py)
)

# The mesh's label names, under the names the topology parser knows them by.
AMBIENT_LABEL = mesh.DATAPLANE_MODE_LABEL
INJECTION_LABEL = mesh.INJECTION_LABEL
WAYPOINT_LABEL = mesh.USE_WAYPOINT_LABEL
BYPASS_INBOUND_ANNOTATION = mesh.BYPASS_INBOUND_ANNOTATION

# Service addresses the planner keeps for itself, as offsets into serviceCIDR: .1 is the
# customary API-server address, .10 the cluster DNS (kube-dns' customary address).
API_SERVER_OFFSET = 1
CLUSTER_DNS_OFFSET = 10
RESERVED_SERVICE_OFFSETS = {API_SERVER_OFFSET: "the Kubernetes API server address",
                            CLUSTER_DNS_OFFSET: "the cluster DNS address"}

# The network joining the nodes (kind's docker network is 172.18.0.0/16 too). The planner
# numbers the node links from it; the topology refuses pod and Service ranges inside it,
# since a pod address there would be routed to a node instead of the pod.
FABRIC_CIDR = ipaddress.IPv4Network("172.18.0.0/16")


@dataclass(frozen=True)
class Source:
    """Where a value came from, so errors and reports can point at the file."""

    file: str
    document: int  # 1-based index of the YAML document in the file
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}, document {self.document}"
        return f"{where}, line {self.line}" if self.line else where


@dataclass
class Node:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    source: Source | None = None


@dataclass
class ServiceAccount:
    namespace: str
    name: str
    source: Source | None = None


@dataclass
class ContainerPort:
    container_port: int
    name: str | None = None
    protocol: str = "TCP"


@dataclass
class Container:
    name: str
    image: str
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    ports: list[ContainerPort] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeRequirement:
    """One `matchExpressions` entry of a node affinity term: In, NotIn, Exists, DoesNotExist."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class SpreadConstraint:
    """One `topologySpreadConstraints` entry, as the default scheduler reads it."""

    max_skew: int
    topology_key: str  # a node label: kubernetes.io/hostname, topology.kubernetes.io/zone, ...
    when_unsatisfiable: str  # DoNotSchedule | ScheduleAnyway
    match_labels: dict[str, str] | None = None  # None: no labelSelector, so no pod is counted


WorkloadKind = Literal["Deployment", "StatefulSet", "Pod"]


@dataclass
class Deployment:
    """A set of identical pods: a Deployment, a StatefulSet, or a single Pod (kind says which)."""

    namespace: str
    name: str
    replicas: int
    service_account: str
    labels: dict[str, str]  # pod template labels
    annotations: dict[str, str]
    containers: list[Container]
    node_name: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    source: Source | None = None
    kind: WorkloadKind = "Deployment"
    # requiredDuringSchedulingIgnoredDuringExecution: a node must match one term (OR),
    # and a term matches when all its requirements do (AND).
    affinity: tuple[tuple[NodeRequirement, ...], ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()

    def pod_name(self, index: int) -> str:
        """A Pod keeps its own name; replicas are `<name>-<i>` (a StatefulSet's stable names)."""
        return self.name if self.kind == "Pod" else f"{self.name}-{index}"


@dataclass
class ServicePort:
    port: int
    target_port: Union[int, str]
    name: str | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass
class Service:
    namespace: str
    name: str
    ports: list[ServicePort]
    selector: dict[str, str]
    cluster_ip: str | None = None  # None: the planner allocates one
    labels: dict[str, str] = field(default_factory=dict)
    source: Source | None = None
    # Kept as written, as the API server keeps any annotation; no layer reads one today, as
    # Istio reads none of a Service's that it does not know (a lab shows it changes nothing).
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class Resource:
    """A kind netlab parses and keeps for later layers (policies, routes, gateways).

    The raw document is kept whole: the layer that implements the kind interprets it.
    """

    kind: str
    namespace: str
    name: str
    spec: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    source: Source | None = None
    annotations: dict[str, str] = field(default_factory=dict)  # a Gateway's netlab.dev/node-name


@dataclass
class PrometheusSpec:
    """`spec.prometheus` of the Lab document: a real Prometheus in the lab, scraping every
    proxy that exposes metrics (docs/prometheus.md). Off unless asked for."""

    enabled: bool = False
    scrape_interval: str = "1s"  # a Prometheus duration; short, so labs wait seconds, not minutes
    # `up` waits until every target has been scraped once, so traffic sent after `up` has
    # a sample before it (what rate() needs). Off: ready once /-/ready answers, ~5 s sooner.
    wait_for_targets: bool = True


@dataclass
class Lab:
    name: str
    nodes: list[Node]
    istio_version: IstioVersion = "1.24+"
    istio_profile: IstioInstallProfile = "ambient"
    trust_domain: str = mesh.DEFAULT_TRUST_DOMAIN
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/16"
    namespaces: list[Namespace] = field(default_factory=list)
    service_accounts: list[ServiceAccount] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)  # kept kinds
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said to the user at load (kinds accepted and ignored)
    prometheus: PrometheusSpec = field(default_factory=PrometheusSpec)

    def namespace(self, name: str) -> Namespace | None:
        return next((n for n in self.namespaces if n.name == name), None)

    def kept(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r.kind == kind]
