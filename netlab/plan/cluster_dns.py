"""What a pod's resolver is told, and what the cluster DNS answers (kube-dns' part of the plan).

Shared by the planner (each pod's resolv.conf, the DNS process' records), the mesh modes
(a DNS proxy forwards to the same resolver) and `netlab exec` (a shell in a pod).
"""

from __future__ import annotations

from collections.abc import Iterable

from netlab.mesh import DNS_DOMAIN
from netlab.snapshot import Service


def resolv_conf(namespace: str, dns_ip: str, domain: str = DNS_DOMAIN) -> str:
    """Kubernetes' ClusterFirst resolv.conf: the namespace's search path, ndots:5."""
    search = f"{namespace}.svc.{domain} svc.{domain} {domain}"
    return f"nameserver {dns_ip}\nsearch {search}\noptions ndots:5\n"


def dns_records(services: Iterable[Service]) -> dict[str, str]:
    return {s.fqdn: s.vip for s in services}


def upstream(dns_ip: str) -> str:
    """The pods' resolver as "ip:port", where a DNS proxy forwards what it does not answer."""
    return f"{dns_ip}:53"
