"""The options of Kiali's namespace graph request, with Kiali's own defaults.

They mirror the query parameters of `GET /api/namespaces/graph` (docs/kiali.md):
`duration`, `rateHttp`, `rateGrpc`, `rateTcp`, `ambientTraffic`,
`includeIdleEdges`, `injectServiceNodes`, plus the UI's Display toggles that
change what the server computes (Security adds the securityPolicy appender) or
what is drawn (Waypoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field

AMBIENT_TRAFFIC = ("total", "ztunnel", "waypoint", "none")
HTTP_RATES = ("requests", "none")
GRPC_RATES = ("requests", "sent", "received", "total", "none")
TCP_RATES = ("sent", "received", "total", "none")


@dataclass(frozen=True)
class Waypoint:
    """A workload Kiali lists as a waypoint (pod label
    `gateway.istio.io/managed=istio.io-mesh-controller`). netlab knows its waypoints
    from the model, so callers pass them instead of a label query."""

    namespace: str
    workload: str
    cluster: str = "Kubernetes"


@dataclass(frozen=True)
class GraphOptions:
    """One graph request. Defaults are Kiali's UI defaults (config.go @v2.1.0),
    except `show_waypoints` (see below)."""

    duration: int = 600  # seconds; the UI default is 10m
    http: str = "requests"
    grpc: str = "requests"
    tcp: str = "sent"
    ambient: str = "total"  # ambientTraffic; ignored by 1.89, which has no such option
    include_idle_edges: bool = False
    inject_service_nodes: bool = True
    # Display → Security: adds the securityPolicy appender and draws the lock.
    show_security: bool = False
    # Display → Waypoints. Kiali's UI default is off; netlab shows them because both
    # field reports are about edges touching a waypoint.
    show_waypoints: bool = True
    waypoints: frozenset[Waypoint] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for name, value, allowed in (("ambient", self.ambient, AMBIENT_TRAFFIC),
                                     ("http", self.http, HTTP_RATES),
                                     ("grpc", self.grpc, GRPC_RATES),
                                     ("tcp", self.tcp, TCP_RATES)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: Kiali accepts {', '.join(allowed)}")
        if self.duration <= 0:
            raise ValueError(f"duration={self.duration}: must be a positive number of seconds")
