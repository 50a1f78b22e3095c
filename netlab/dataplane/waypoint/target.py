"""What a CONNECT to the waypoint is for, and whether this waypoint takes it.

The filter chains of the waypoint's `main_internal` listener exist only for the Services
and workloads that use the waypoint (istio@1.24.0 `listener_waypoint.go`), selected by
the destination the `:authority` names. So the `:authority` is looked up as a Service
VIP:port first, then as a pod IP; anything not attached to this waypoint is refused.

The protocol of a Service port follows Istio's rules (`protocol.go`): the port name's
prefix before `-` or `appProtocol`; `tcp` is TCP-proxied, `http`/`http2`/`grpc`/`h2c`
are HTTP; anything else is sniffed (Envoy's http_inspector).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from netlab.snapshot import ProxySnapshot, Service, ServicePort, Workload

Protocol = Literal["http", "tcp", "sniff"]
HTTP_NAMES = frozenset({"http", "http2", "grpc", "grpc-web", "h2c"})


@dataclass(frozen=True)
class Target:
    """One accepted CONNECT: the Service (or pod) it is for, and how to speak to it."""

    ip: str
    port: int
    service: Service | None  # None for a request to a pod IP (workload waypoint)
    service_port: ServicePort | None
    workload: Workload | None  # the pod, for a pod-IP request
    protocol: Protocol

    @property
    def authority(self) -> str:
        return f"{self.ip}:{self.port}"


def port_protocol(port: ServicePort | None) -> Protocol:
    if port is None:
        return "sniff"
    declared = (port.app_protocol or (port.name or "").split("-", 1)[0]).lower()
    if declared == "tcp":
        return "tcp"
    if declared in HTTP_NAMES or declared.startswith("kubernetes.io/h2c"):
        return "http"
    return "sniff"


def resolve(cfg: ProxySnapshot, ip: str, port: int) -> Target | None:
    """The target for `ip:port` if it uses this waypoint (cfg.waypoint); else None."""
    hit = cfg.service_at(ip, port)
    if hit is not None:
        svc, sp = hit
        if svc.waypoint != cfg.waypoint:
            return None
        return Target(ip, port, svc, sp, None, port_protocol(sp))
    w = cfg.workload_by_ip(ip)
    if w is None or w.waypoint != cfg.waypoint:
        return None
    return Target(ip, port, None, None, w, "sniff")
