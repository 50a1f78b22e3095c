"""What istiod pushes to one sidecar, as Envoy names it: listeners, routes, clusters.

Why a module of its own: the planner (the istiod stand-in, `netlab.plan.sidecar_xds`)
writes this config, the sidecar proxy (`netlab.dataplane.sidecar`) serves from it and
`netlab proxy-config` prints it. All three must agree on every name, so the names and
the shapes are defined once, here, at the bottom of the package (layer 0, like
`netlab.snapshot`, whose JSON helpers it uses: by field name, never by position).

The shapes follow Envoy's xDS resources (envoy.config.listener.v3.Listener,
route.v3.RouteConfiguration, cluster.v3.Cluster) with only the fields a sidecar in a
lab acts on. Field names are Envoy's where Envoy has one. A lab is fixed once `up`
finishes, so the pushes collapse into one `SidecarSnapshot` file per sidecar.

Names (istio@1.24.0 `pilot/pkg/model/service.go` BuildSubsetKey, `networking/util`,
`networking/core/listener*.go`; see docs/sidecar.md):
- outbound cluster `outbound|<port>||<fqdn>`, its SNI `outbound_.<port>_._.<fqdn>`;
- inbound cluster `inbound|<port>||`;
- listeners `virtualOutbound` (15001), `virtualInbound` (15006), `0.0.0.0_<port>`,
  `<vip>_<port>`, `connect_terminate` (15008) and the internal `main_internal`;
- route configs `<port>` (explicit HTTP ports) and `<fqdn>:<port>` (sniffed ports);
  virtual hosts `<fqdn>:<port>` and `allow_any`; routes `default` and `allow_any`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from netlab import mesh
from netlab.snapshot import (Bootstrap, Capture, CertAuthority, Service, Workload, from_json,
                             to_json)

# -- Envoy / istiod names ------------------------------------------------------------------

VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
CONNECT_TERMINATE = "connect_terminate"  # the HBONE listener on 15008
MAIN_INTERNAL = "main_internal"  # internal listener (and cluster) behind connect_terminate
CONNECT_ORIGINATE = "connect_originate"  # internal listener (and cluster) sending HBONE
PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"
ALLOW_ANY = "allow_any"  # the catch-all virtual host and its route
DEFAULT_ROUTE = "default"  # a route with no VirtualService behind it
INBOUND_PASSTHROUGH_BIND = "127.0.0.6"  # Envoy's source address toward the local app

# Transport protocols and ALPN, as tls_inspector / http_inspector detect them (§D2, §D3).
TLS = "tls"
RAW_BUFFER = "raw_buffer"
MTLS_HTTP_ALPNS = ("istio-http/1.0", "istio-http/1.1", "istio-h2")
MTLS_ALPNS = ("istio", "istio-peer-exchange") + MTLS_HTTP_ALPNS  # PERMISSIVE mTLS chain
PLAINTEXT_HTTP_ALPNS = ("http/1.1", "h2c")  # http_inspector's result for cleartext HTTP
PLAINTEXT_HTTP10_ALPNS = ("http/1.0",) + PLAINTEXT_HTTP_ALPNS  # with HTTP10 enabled
SERVER_HTTP_ALPNS = ("h2", "http/1.1")
SERVER_TCP_ALPNS = ("istio-peer-exchange", "h2", "http/1.1")
CLIENT_TCP_ALPNS = ("istio-peer-exchange", "istio")
CLIENT_H2_ALPNS = ("istio-peer-exchange", "istio", "h2")
HBONE_ALPNS = ("h2",)
# The `istio.alpn` HTTP filter: ALPN the outbound TLS offers, per upstream HTTP protocol.
ALPN_OVERRIDE: dict[str, tuple[str, ...]] = {
    "HTTP10": ("istio-http/1.0", "istio", "http/1.0"),
    "HTTP11": ("istio-http/1.1", "istio", "http/1.1"),
    "HTTP2": ("istio-h2", "istio", "h2"),
}

# Istio's default retry policy for a route without a VirtualService (route/retry/retry.go).
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_NUM_RETRIES = 2
DEFAULT_RETRIABLE_STATUS_CODES = (503,)

# Access log (istio@1.24.0 `pilot/pkg/model/telemetry_logging.go`, mesh-facts-2 §D4).
ENVOY_TEXT_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n")
ENVOY_JSON_LOG_FORMAT: dict[str, str] = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",  # 1.24; %UPSTREAM_CLUSTER_RAW% by 1.28
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}


def outbound_cluster_name(port: int, fqdn: str) -> str:
    return f"outbound|{port}||{fqdn}"


def inbound_cluster_name(port: int) -> str:
    return f"inbound|{port}||"


def outbound_sni(port: int, fqdn: str) -> str:
    """The SNI a sidecar sends: the cluster name with `|` → `_`, dotted (cluster_tls.go)."""
    return f"outbound_.{port}_._.{fqdn}"


def vip_listener_name(vip: str, port: int) -> str:
    return f"{vip}_{port}"


def port_listener_name(port: int) -> str:
    return f"0.0.0.0_{port}"


def vhost_name(fqdn: str, port: int) -> str:
    """A virtual host's name, and a sniffed port's route config name."""
    return f"{fqdn}:{port}"


# -- the resources ----------------------------------------------------------------------

Protocol = Literal["HTTP", "HTTP2", "TCP", "AUTO"]
"""A Service port's protocol as istiod decides it (name prefix, appProtocol, else AUTO)."""

TlsMode = Literal["istio", "disabled"]
"""An endpoint's `tlsMode` metadata (security.istio.io/tlsMode): does it have an Istio proxy."""

Transport = Literal["hbone", "mtls", "plaintext"]
"""How this sidecar reaches one endpoint: HBONE to 15008, Istio mTLS to the port, or clear."""


@dataclass(frozen=True)
class FilterChainMatch:
    """Envoy's FilterChainMatch: empty fields match anything."""

    destination_port: int | None = None
    prefix_ranges: tuple[str, ...] = ()  # destination CIDRs ("10.96.0.12/32")
    transport_protocol: str = ""  # "tls", "raw_buffer" or "" (any)
    application_protocols: tuple[str, ...] = ()  # ALPN (TLS) or http_inspector's guess


@dataclass(frozen=True)
class DownstreamTls:
    """The server TLS of an inbound chain: the pod's own certificate, the mesh root."""

    require_client_certificate: bool = True
    alpn_protocols: tuple[str, ...] = SERVER_HTTP_ALPNS
    min_version: str = "TLSv1_2"
    max_version: str = "TLSv1_3"


@dataclass(frozen=True)
class UpstreamTls:
    """Istio mTLS from a sidecar to an endpoint with tlsMode istio (auto-mTLS)."""

    sni: str
    alpn_protocols: tuple[str, ...]  # the cluster default; HTTP chains override (ALPN_OVERRIDE)
    subject_alt_names: tuple[str, ...]  # SPIFFE URIs the server certificate must carry
    subject_alt_name_prefixes: tuple[str, ...] = ()  # or any URI SAN with one of these prefixes
    min_version: str = "TLSv1_2"
    max_version: str = "TLSv1_3"


@dataclass(frozen=True)
class RetryPolicy:
    retry_on: str = DEFAULT_RETRY_ON
    num_retries: int = DEFAULT_NUM_RETRIES
    retriable_status_codes: tuple[int, ...] = DEFAULT_RETRIABLE_STATUS_CODES


@dataclass(frozen=True)
class Route:
    name: str  # "default", "allow_any"
    cluster: str
    prefix: str = "/"
    timeout_ms: int = 0  # 0: no timeout (Istio's default for both kinds of route)
    retry_policy: RetryPolicy | None = None
    connect_matcher: bool = False  # matches CONNECT (the HBONE terminate route)


@dataclass(frozen=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class RouteConfiguration:
    name: str  # "9090", "prometheus.monitoring.svc.cluster.local:9090", "inbound|9090||"
    virtual_hosts: tuple[VirtualHost, ...]
    ignore_port_in_host_matching: bool = True
    validate_clusters: bool = False


@dataclass(frozen=True)
class HttpConnectionManager:
    """envoy.filters.network.http_connection_manager: by RDS name, or inline (inbound)."""

    stat_prefix: str
    rds: str = ""  # outbound: the route config's name in `SidecarSnapshot.route_configs`
    route_config: RouteConfiguration | None = None  # inbound and connect_terminate: inline
    alpn_override: bool = False  # the `istio.alpn` filter (outbound HTTP)
    metadata_exchange: bool = True  # the `istio_headers` MX filter; off on HBONE chains
    connect_terminate: bool = False  # upgrades CONNECT (HBONE) instead of proxying HTTP
    connect_authority: bool = False  # copies :authority to the original dst (HBONE)


@dataclass(frozen=True)
class TcpProxy:
    """envoy.filters.network.tcp_proxy."""

    stat_prefix: str
    cluster: str
    tunneling_hostname: str = ""  # CONNECT :authority when tunneling (connect_originate)


@dataclass(frozen=True)
class FilterChain:
    """One chain: a match, optional server TLS, and one terminal filter (HTTP or TCP)."""

    name: str
    match: FilterChainMatch = FilterChainMatch()
    tls: DownstreamTls | None = None  # transport socket; None is raw_buffer
    http: HttpConnectionManager | None = None
    tcp: TcpProxy | None = None
    metadata_exchange: bool = False  # the `istio.metadata_exchange` network filter
    hbone: bool = False  # reached through connect_terminate: already decrypted


@dataclass(frozen=True)
class Listener:
    name: str
    address: str  # "0.0.0.0" or a VIP; "" for an internal listener
    port: int  # 0 for an internal listener
    traffic_direction: Literal["OUTBOUND", "INBOUND", "UNSPECIFIED"] = "OUTBOUND"
    bind_to_port: bool = True  # per-port outbound listeners are reached via 15001 only
    use_original_dst: bool = False  # hand the connection to the listener of its original dst
    transparent: bool = False  # IP_TRANSPARENT (TPROXY interception)
    listener_filters: tuple[str, ...] = ()  # "original_dst", "tls_inspector", "http_inspector"
    filter_chains: tuple[FilterChain, ...] = ()
    default_filter_chain: FilterChain | None = None  # None: no match → filter_chain_not_found
    access_log_nr_only: bool = False  # the virtualInbound listener logs only NR events


@dataclass(frozen=True)
class LbEndpoint:
    """One endpoint of an EDS cluster, with the metadata istiod attaches."""

    address: str  # pod IP
    port: int  # the resolved targetPort
    workload: str  # "ns/name": peer-metadata lookup in `SidecarSnapshot.workloads`
    service_account: str
    tls_mode: TlsMode  # "istio": the endpoint has an Istio proxy (sidecar, or ambient HBONE)
    hbone: bool  # the endpoint accepts HBONE on 15008 (ambient, or tunnel: http)
    transport: Transport  # what this sidecar does toward it (docs/sidecar.md)
    hbone_port: int = mesh.HBONE_PORT


@dataclass(frozen=True)
class ServiceRef:
    """A cluster's `istio` metadata entry: the Service the cluster stands for (telemetry)."""

    host: str
    name: str
    namespace: str


@dataclass(frozen=True)
class Cluster:
    name: str
    type: Literal["EDS", "ORIGINAL_DST", "STATIC"]
    direction: Literal["outbound", "inbound", ""] = ""
    service: str = ""  # the FQDN of an outbound cluster
    port: int = 0  # the Service port (outbound) or the workload port (inbound)
    protocol: Protocol = "TCP"
    endpoints: tuple[LbEndpoint, ...] = ()
    tls: UpstreamTls | None = None  # applies to endpoints with transport "mtls" only
    upstream_bind_address: str = ""  # 127.0.0.6 toward the local app
    connect_timeout_ms: int = 10_000
    services: tuple[ServiceRef, ...] = ()  # cluster metadata (inbound: the pod's Services)


@dataclass(frozen=True)
class AccessLog:
    """Envoy's file access log as istiod configures it (on in a lab, as in the demo profile)."""

    enabled: bool = True
    path: str = "/dev/stdout"
    encoding: Literal["TEXT", "JSON"] = "TEXT"
    text_format: str = ENVOY_TEXT_LOG_FORMAT
    json_format: dict[str, str] = field(default_factory=lambda: dict(ENVOY_JSON_LOG_FORMAT))


# -- one sidecar's snapshot -----------------------------------------------------------------


@dataclass(frozen=True)
class SidecarSnapshot:
    """Everything one sidecar knows: its pod, its credentials, and istiod's xDS for it.

    `node`, `trust_domain`, `workdir`, `ca` and `bootstrap` carry the same meaning as in
    `snapshot.ProxySnapshot`, so the proxy core's certificate helpers serve both.
    """

    workload: Workload  # the pod this sidecar is injected into
    node: str  # the pod's node (the bootstrap identity is node-bound)
    trust_domain: str
    capture: Capture  # "redirect" or "tproxy" (sidecar.istio.io/interceptionMode)
    workdir: str
    ca: CertAuthority
    bootstrap: Bootstrap
    istio_version: str = ""  # for people; the fields below carry what it changes
    proxy: str = "sidecar"
    hbone: bool = False  # listens for HBONE on 15008 (networking.istio.io/tunnel: http)
    metadata_discovery: bool = False  # WDS peer metadata (off for sidecars in 1.23/1.24, §A4)
    access_log: AccessLog = AccessLog()
    workloads: tuple[Workload, ...] = ()  # the mesh's pods: peer metadata by IP or key
    services: tuple[Service, ...] = ()
    listeners: tuple[Listener, ...] = ()
    route_configs: tuple[RouteConfiguration, ...] = ()
    clusters: tuple[Cluster, ...] = ()

    @property
    def identity(self) -> str:
        return self.workload.identity(self.trust_domain)

    def to_json(self) -> str:
        return to_json(self)

    @classmethod
    def load(cls, path: str) -> "SidecarSnapshot":
        with open(path) as f:
            return from_json(cls, f.read())

    # Lookups by Envoy name.
    def listener(self, name: str) -> Listener | None:
        return next((x for x in self.listeners if x.name == name), None)

    def route_config(self, name: str) -> RouteConfiguration | None:
        return next((x for x in self.route_configs if x.name == name), None)

    def cluster(self, name: str) -> Cluster | None:
        return next((x for x in self.clusters if x.name == name), None)

    def workload_by_ip(self, ip: str) -> Workload | None:
        return next((w for w in self.workloads if w.ip == ip), None)

    def outbound_listener_for(self, ip: str, port: int) -> Listener | None:
        """Where virtualOutbound hands a connection: `<ip>_<port>`, else `0.0.0.0_<port>`."""
        return (self.listener(vip_listener_name(ip, port))
                or self.listener(port_listener_name(port)))
