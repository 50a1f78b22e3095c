"""Where ztunnel sends an outbound connection, and which Service an inbound one is for.

Outbound (ztunnel@1.24.0 `src/proxy/outbound.rs` `build_request`, `src/state.rs`;
mesh-facts §3 and mesh-facts-2 §C2), first match wins:

1. the original destination is a Service VIP:port and the Service has a waypoint →
   HBONE to a **waypoint pod**'s 15008, `:authority` = the VIP:port as dialled, the
   upstream identity the waypoint's;
2. otherwise a VIP is resolved to one endpoint here (before kube-proxy sees it); if the
   endpoint's workload (or the pod a pod-IP request names) has a workload waypoint →
   HBONE to that waypoint, `:authority` = the endpoint's ip:port;
3. the destination workload speaks HBONE (ambient, or a sidecar with
   `networking.istio.io/tunnel: http`) → HBONE to `podIP:15008`, `:authority podIP:port`;
4. anything else → plain passthrough to the (resolved) address.

A waypoint is never traversed twice: traffic whose source *is* the waypoint goes on to
the endpoint (ztunnel's `check_from_waypoint`). In a lab that never happens through a
ztunnel, since the waypoint pod is not captured, but the rule is kept where ztunnel
keeps it.

Inbound, the Service a connection is counted under is the `forwarded` header's
`host=` when it names a known Service (ztunnel 1.24 sends it, mesh-facts-2 §G4), else
ztunnel's target-port guess (`guess_inbound_service`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from netlab import mesh
from netlab.snapshot import Endpoint, ProxySnapshot, Service, ServicePort, Workload

HBONE_PORT = mesh.HBONE_PORT


@dataclass(frozen=True)
class Route:
    """One outbound decision. `hbone_addr` None means plain TCP to `target`."""

    target: tuple[str, int]  # the destination the tunnel (or the passthrough) is for
    authority: str  # the CONNECT :authority (HBONE only)
    hbone_addr: tuple[str, int] | None  # where the HBONE connection goes: pod or waypoint :15008
    dst: Workload | None  # the actual next hop: the waypoint pod when there is one
    service: str | None  # FQDN of the intended Service (destination_service), None if none
    waypoint: str = ""  # the waypoint Service's FQDN when the route goes through one
    refusal: str = ""  # why the connection is closed instead (no endpoints, no waypoint pod)

    @property
    def via_waypoint(self) -> bool:
        return bool(self.waypoint)


def pick(port: ServicePort) -> Endpoint | None:
    """ztunnel load-balances a VIP itself: one random endpoint."""
    return random.choice(port.endpoints) if port.endpoints else None


def _addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def is_waypoint_of(w: Workload | None, waypoint_fqdn: str, cfg: ProxySnapshot) -> bool:
    """Whether `w` is a pod of the waypoint Service `waypoint_fqdn` (check_from_waypoint)."""
    svc = cfg.service_by_fqdn(waypoint_fqdn)
    return w is not None and svc is not None and any(
        e.pod == w.key for p in svc.ports for e in p.endpoints)


def waypoint_pod(cfg: ProxySnapshot, waypoint_fqdn: str) -> Workload | None:
    """A pod of the waypoint (ztunnel resolves the waypoint's hostname to a workload)."""
    svc = cfg.service_by_fqdn(waypoint_fqdn)
    port = svc.port(HBONE_PORT) if svc else None
    ep = pick(port) if port else None
    return cfg.workload_by_key(ep.pod) if ep else None


def _via_waypoint(cfg: ProxySnapshot, waypoint: str, target: tuple[str, int],
                  service: Service | None) -> Route:
    wp = waypoint_pod(cfg, waypoint)
    fqdn = service.fqdn if service else None
    if wp is None:
        return Route(target, "", None, None, fqdn, waypoint, refusal=f"waypoint {waypoint} has no pod")
    return Route(target, _addr(*target), (wp.ip, HBONE_PORT), wp, fqdn, waypoint)


def outbound(cfg: ProxySnapshot, src: Workload, dst: tuple[str, int]) -> Route:
    """The path for a connection from `src` (a pod on this node) to original destination `dst`."""
    hit = cfg.service_at(*dst)
    svc = hit[0] if hit else None
    if svc is not None and svc.waypoint and not is_waypoint_of(src, svc.waypoint, cfg):
        return _via_waypoint(cfg, svc.waypoint, dst, svc)
    target = dst
    if hit is not None:
        ep = pick(hit[1])
        if ep is None:
            return Route(dst, "", None, None, hit[0].fqdn, refusal=f"no endpoints for {hit[0].fqdn}")
        target = (ep.ip, ep.port)
    dst_wl = cfg.workload_by_ip(target[0])
    if dst_wl is not None and dst_wl.waypoint and not is_waypoint_of(src, dst_wl.waypoint, cfg):
        return _via_waypoint(cfg, dst_wl.waypoint, target, svc)
    fqdn = svc.fqdn if svc else None
    if dst_wl is not None and dst_wl.speaks_hbone:
        return Route(target, _addr(*target), (dst_wl.ip, HBONE_PORT), dst_wl, fqdn)
    return Route(target, "", None, dst_wl, fqdn)


def forwarded_host(headers: dict[str, str]) -> str | None:
    """The `host=` of a `forwarded` header (RFC 7239: `;`-separated pairs, `,` between hops)."""
    for element in (headers.get("forwarded") or "").split(","):
        for pair in element.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key.lower() == "host":
                return value.strip().strip('"') or None
    return None


def inbound_service(cfg: ProxySnapshot, pod: Workload, port: int, headers: dict[str, str]) -> Service | None:
    """The Service an inbound HBONE connection is counted under (ztunnel 1.24)."""
    host = forwarded_host(headers)
    svc = cfg.service_by_fqdn(host) if host else None
    return svc if svc is not None else cfg.inbound_service(pod, port)
