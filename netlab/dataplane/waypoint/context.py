"""What every chain of one waypoint shares, and the telemetry edge both chains report.

Labels as an Envoy waypoint's `istio_stats` fills them (proxy@1.24.0, the SERVER_GATEWAY
branch; mesh-facts-2 §C3, §E, §G7):

- `reporter="waypoint"`;
- source: the original client, found by the downstream IP (the client ztunnel dials from
  the client pod's netns, so the HBONE peer address is the client pod's IP), and
  `source_principal` = the client's SPIFFE ID from the HBONE TLS;
- destination: the selected endpoint's workload and identity;
- `destination_service` = the cluster's service host (the backend an HTTPRoute chose),
  `destination_service_name` its name, and `destination_service_namespace` **the
  waypoint's own namespace** (§G7: read in istio_stats.cc, not checked live);
- `connection_security_policy`: `mutual_tls` when the downstream peer SAN and the
  waypoint's own SAN are both known (the HBONE TLS), which they always are here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netlab.dataplane import hbone
from netlab.dataplane.envoy.accesslog import AccessLog
from netlab.dataplane.envoy.stats import Edge, IstioStats, PeerInfo, ServiceRef, server_security
from netlab.snapshot import ProxySnapshot, Workload


@dataclass
class Env:
    cfg: ProxySnapshot
    me: Workload  # the waypoint pod
    identity: str  # its SPIFFE ID
    pool: hbone.HbonePool
    stats: IstioStats
    log: AccessLog
    ignored_filters: set[str] = field(default_factory=set)  # HTTPRoute filters met, not modelled

    @property
    def trust_domain(self) -> str:
        return self.cfg.trust_domain


@dataclass(frozen=True)
class Downstream:
    """The client side of one tunnel: who, from where, to which VIP:port."""

    peer: tuple[str, int]  # the HBONE connection's peer: the client pod
    identity: str  # its SPIFFE ID
    local: str  # %DOWNSTREAM_LOCAL_ADDRESS%: the :authority (VIP:port or podIP:port)

    @property
    def remote(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]}"


def edge(env: Env, down: Downstream, dst: Workload | None, service_fqdn: str | None) -> Edge:
    src = env.cfg.workload_by_ip(down.peer[0])
    svc = None
    if service_fqdn:
        name = service_fqdn.split(".")[0]
        svc = ServiceRef(service_fqdn, name, env.me.namespace)
    return Edge("waypoint", PeerInfo.of(src) if src else None, down.identity,
                PeerInfo.of(dst) if dst else None, dst.identity(env.trust_domain) if dst else None,
                svc, server_security(down.identity, env.identity))


def cluster_name(port: int, protocol: str, fqdn: str) -> str:
    """A waypoint's per-Service cluster, `inbound-vip|<port>|<http|tcp>|<host>`."""
    return f"inbound-vip|{port}|{protocol}|{fqdn}"
