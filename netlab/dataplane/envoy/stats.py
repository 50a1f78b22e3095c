"""Istio's standard metrics as Envoy's `istio_stats` filter makes them (mesh-facts-2 §E).

Why a model of *who knows what*: Kiali and the labs read which reporter emits which labels,
so the labels here follow istio_stats' rules (proxy@1.24.0 `istio_stats.cc`):

- `reporter`: `source` on outbound (client sidecar), `destination` on inbound (server
  sidecar), `waypoint` on a waypoint;
- `connection_security_policy`: a client always says `unknown`; a server or waypoint says
  `mutual_tls` when both the peer and the local SAN exist, else `none`;
- the local side's labels come from the proxy's own node, the peer's from metadata exchange
  (or endpoint metadata); what is missing prints `unknown`, except `*_canonical_revision`,
  which prints `latest`. A server falls back to the peer SAN's namespace;
- `destination_service*`: the cluster's service; on outbound passthrough the route
  `allow_any` sets `destination_service_name="PassthroughCluster"` and `destination_service`
  falls back to the Host header (§D1);
- HTTP chains count `istio_requests_total` and the duration and size histograms; only TCP
  proxy chains count `istio_tcp_*`; `grpc_response_status` is empty for non-gRPC.

The exposition is Prometheus text 0.0.4 (what Envoy's /stats/prometheus serves), with HELP
lines Envoy does not print so `promtool check metrics` has no "no help text" complaint.
Histogram buckets are Envoy's defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator, Literal

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from netlab import mesh
from netlab.snapshot import Workload

UNKNOWN = "unknown"
LATEST = "latest"
PASSTHROUGH_CLUSTER = "PassthroughCluster"
# Prometheus text format 0.0.4, which Envoy's /stats/prometheus serves; newer
# prometheus_client calls its latest text format 1.0.0, which Prometheus 2.x does not name.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Reporter = Literal["source", "destination", "waypoint"]
Security = Literal["mutual_tls", "none", "unknown"]

# Envoy's default histogram buckets (`Stats::HistogramSettingsImpl::defaultBuckets`).
BUCKETS: tuple[float, ...] = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
                              30000, 60000, 300000, 600000, 1800000, 3600000)

PEER_LABELS = ("workload", "canonical_service", "canonical_revision", "workload_namespace",
               "principal", "app", "version", "cluster")
EDGE_LABELS: tuple[str, ...] = (
    "reporter",
    "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal",
    "destination_app", "destination_version", "destination_service",
    "destination_canonical_service", "destination_canonical_revision",
    "destination_service_name", "destination_service_namespace", "destination_cluster",
)
HTTP_LABELS = EDGE_LABELS + ("request_protocol", "response_code", "grpc_response_status",
                             "response_flags", "connection_security_policy")
TCP_LABELS = EDGE_LABELS + ("request_protocol", "response_flags", "connection_security_policy")

# Names as exposed, and help text (istio.io `reference/config/metrics`).
REQUESTS = ("istio_requests", "Counter incremented for every request handled by an Istio proxy.")
HISTOGRAMS = {
    "duration": ("istio_request_duration_milliseconds",
                 "Duration of requests in milliseconds, measured by the proxy."),
    "request_bytes": ("istio_request_bytes", "HTTP request body sizes in bytes."),
    "response_bytes": ("istio_response_bytes", "HTTP response body sizes in bytes."),
}
TCP = {
    "opened": ("istio_tcp_connections_opened",
               "Counter incremented for every opened TCP connection."),
    "closed": ("istio_tcp_connections_closed",
               "Counter incremented for every closed TCP connection."),
    "sent": ("istio_tcp_sent_bytes",
             "Bytes sent during response in case of a TCP connection."),
    "received": ("istio_tcp_received_bytes",
                 "Bytes received during request in case of a TCP connection."),
}


@dataclass(frozen=True)
class PeerInfo:
    """One side's workload metadata, as metadata exchange or the local node carries it."""

    workload: str | None = None
    namespace: str | None = None
    app: str | None = None
    version: str | None = None
    canonical_service: str | None = None
    canonical_revision: str | None = None
    cluster: str | None = None

    @classmethod
    def of(cls, w: Workload) -> "PeerInfo":
        """Envoy's `app`/`version` are the raw pod labels; canonical ones follow Istio's precedence."""
        return cls(workload=w.workload_name, namespace=w.namespace, app=w.labels.get("app"),
                   version=w.labels.get("version"), canonical_service=w.canonical_service,
                   canonical_revision=w.canonical_revision, cluster=mesh.TELEMETRY_CLUSTER)

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> "PeerInfo":
        return cls(**{k: str(d[k]) for k in cls.__dataclass_fields__ if d.get(k)})


@dataclass(frozen=True)
class ServiceRef:
    """The `destination_service*` triple."""

    host: str | None
    name: str | None
    namespace: str | None

    @classmethod
    def of_fqdn(cls, fqdn: str) -> "ServiceRef":
        parts = fqdn.split(".")
        if len(parts) >= 3 and parts[2] == "svc":
            return cls(fqdn, parts[0], parts[1])
        return cls(fqdn, fqdn, None)

    @classmethod
    def passthrough(cls, host_header: str | None) -> "ServiceRef":
        """Route `allow_any`: the service name is the cluster, the host the Host header."""
        return cls(host_header, PASSTHROUGH_CLUSTER, None)


@dataclass(frozen=True)
class Edge:
    """Who talked to whom, as one reporter sees it: the labels every metric shares."""

    reporter: Reporter
    source: PeerInfo | None
    source_principal: str | None
    destination: PeerInfo | None
    destination_principal: str | None
    service: ServiceRef | None
    security: Security


def _namespace_of(principal: str | None) -> str | None:
    parts = mesh.parse_spiffe_uri(principal or "")
    return parts[1] if parts else None


def server_security(peer_san: str | None, local_san: str | None) -> Security:
    """A server's (or waypoint's) view: mutual_tls only when both SANs are known."""
    return "mutual_tls" if peer_san and local_san else "none"


def client_edge(local: PeerInfo, local_san: str | None, peer: PeerInfo | None,
                peer_san: str | None, service: ServiceRef | None) -> Edge:
    """Outbound: the local node is the source; the upstream peer the destination."""
    return Edge("source", local, local_san, peer, peer_san, service, "unknown")


def server_edge(local: PeerInfo, local_san: str | None, peer: PeerInfo | None,
                peer_san: str | None, service: ServiceRef | None,
                reporter: Reporter = "destination") -> Edge:
    """Inbound (or waypoint): the downstream peer is the source; its namespace falls back
    to the peer SAN's when metadata exchange told nothing."""
    if peer is None or not peer.namespace:
        ns = _namespace_of(peer_san)
        if ns:
            peer = PeerInfo(**{**(peer.__dict__ if peer else {}), "namespace": ns})
    return Edge(reporter, peer, peer_san, local, local_san, service,
                server_security(peer_san, local_san))


def _peer(prefix: str, p: PeerInfo | None, principal: str | None) -> dict[str, str]:
    p = p or PeerInfo()
    return {
        f"{prefix}_workload": p.workload or UNKNOWN,
        f"{prefix}_canonical_service": p.canonical_service or UNKNOWN,
        f"{prefix}_canonical_revision": p.canonical_revision or LATEST,
        f"{prefix}_workload_namespace": p.namespace or UNKNOWN,
        f"{prefix}_principal": principal or UNKNOWN,
        f"{prefix}_app": p.app or UNKNOWN,
        f"{prefix}_version": p.version or UNKNOWN,
        f"{prefix}_cluster": p.cluster or UNKNOWN,
    }


def edge_labels(e: Edge) -> dict[str, str]:
    svc = e.service or ServiceRef(None, None, None)
    return {"reporter": e.reporter, **_peer("source", e.source, e.source_principal),
            **_peer("destination", e.destination, e.destination_principal),
            "destination_service": svc.host or UNKNOWN,
            "destination_service_name": svc.name or UNKNOWN,
            "destination_service_namespace": svc.namespace or UNKNOWN}


def http_labels(e: Edge, response_code: int, response_flags: str, protocol: str = "http",
                grpc_status: str = "") -> dict[str, str]:
    out = {**edge_labels(e), "request_protocol": protocol, "response_code": str(response_code),
           "grpc_response_status": grpc_status, "response_flags": response_flags or "-",
           "connection_security_policy": e.security}
    return {k: out[k] for k in HTTP_LABELS}


def tcp_labels(e: Edge, response_flags: str) -> dict[str, str]:
    out = {**edge_labels(e), "request_protocol": "tcp", "response_flags": response_flags or "-",
           "connection_security_policy": e.security}
    return {k: out[k] for k in TCP_LABELS}


@lru_cache(maxsize=4096)
def _http_key(edge: Edge, response_code: int, response_flags: str, protocol: str) -> tuple[str, ...]:
    """The label values of one request's series; a proxy sees few distinct edges, so they are
    worked out once per edge and outcome, not per request."""
    return tuple(http_labels(edge, response_code, response_flags, protocol).values())


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        for i, le in enumerate(BUCKETS):
            if value <= le:
                self.counts[i] += 1
        self.total += value
        self.n += 1


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def exposition(registry: CollectorRegistry) -> tuple[str, bytes]:
    """(Content-Type, body) of a scrape, for `proxy.admin.serve_metrics`."""
    return CONTENT_TYPE, generate_latest(registry)


class IstioStats(Collector):
    """The counters and histograms of one proxy; register it in the registry it serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.requests: dict[tuple[str, ...], float] = {}
        self.histograms: dict[str, dict[tuple[str, ...], _Histogram]] = {k: {} for k in HISTOGRAMS}
        self.tcp: dict[str, dict[tuple[str, ...], float]] = {k: {} for k in TCP}
        if registry is not None:
            registry.register(self)

    # -- recording --------------------------------------------------------------------
    def request(self, edge: Edge, response_code: int, response_flags: str, duration_ms: float,
                request_bytes: int, response_bytes: int, protocol: str = "http") -> None:
        """One HTTP request finished (or was answered locally) on an HTTP chain."""
        key = _http_key(edge, response_code, response_flags, protocol)
        self.requests[key] = self.requests.get(key, 0.0) + 1
        for name, value in (("duration", duration_ms), ("request_bytes", request_bytes),
                            ("response_bytes", response_bytes)):
            self.histograms[name].setdefault(key, _Histogram()).observe(value)

    def tcp_opened(self, edge: Edge, response_flags: str = "-") -> None:
        key = tuple(tcp_labels(edge, response_flags).values())
        self.tcp["opened"][key] = self.tcp["opened"].get(key, 0.0) + 1

    def tcp_closed(self, edge: Edge, received: int, sent: int, response_flags: str = "-") -> None:
        """`received`: bytes read from the downstream; `sent`: bytes written to it (§E)."""
        key = tuple(tcp_labels(edge, response_flags).values())
        for name, amount in (("closed", 1), ("received", received), ("sent", sent)):
            self.tcp[name][key] = self.tcp[name].get(key, 0.0) + amount

    # -- exposition -------------------------------------------------------------------
    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        if self.requests:
            fam = CounterMetricFamily(REQUESTS[0], REQUESTS[1], labels=list(HTTP_LABELS))
            for key, v in self.requests.items():
                fam.add_metric(list(key), v)
            yield fam
        for name, (metric, doc) in HISTOGRAMS.items():
            series = self.histograms[name]
            if not series:
                continue
            hfam = HistogramMetricFamily(metric, doc, labels=list(HTTP_LABELS))
            for key, h in series.items():
                buckets = [(_le(le), float(c)) for le, c in zip(BUCKETS, h.counts)]
                buckets.append(("+Inf", float(h.n)))
                hfam.add_metric(list(key), buckets, sum_value=h.total if math.isfinite(h.total) else 0)
            yield hfam
        for name, (metric, doc) in TCP.items():
            if not self.tcp[name]:
                continue
            cfam = CounterMetricFamily(metric, doc, labels=list(TCP_LABELS))
            for key, v in self.tcp[name].items():
                cfam.add_metric(list(key), v)
            yield cfam
