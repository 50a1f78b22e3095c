"""The ztunnel config file: the lab model standing in for xDS (WDS/ADS).

Why a static file: the lab is fixed once `up` finishes, so the pushes istiod would
send collapse into one snapshot. Lookups mirror what ztunnel's state keeps: workloads
by IP, services by VIP:port.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkloadInfo:
    name: str
    namespace: str
    deployment: str
    service_account: str
    ip: str
    node: str
    netns: str
    labels: dict[str, str]
    in_mesh: bool
    hbone: bool  # a sidecar that listens for HBONE itself

    def identity(self, trust_domain: str) -> str:
        return f"spiffe://{trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def hbone_capable(self) -> bool:
        return self.in_mesh or self.hbone


@dataclass(frozen=True)
class Endpoint:
    pod: str
    ip: str
    port: int


@dataclass(frozen=True)
class ServiceEntry:
    namespace: str
    name: str
    vip: str
    port: int
    endpoints: tuple[Endpoint, ...]

    @property
    def hostname(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass
class ZtunnelConfig:
    node: str
    trust_domain: str
    istio_version: str
    ca_url: str
    ca_dir: str
    root_cert: str
    workdir: str
    bootstrap_cert: str
    bootstrap_key: str
    workloads: list[WorkloadInfo]
    services: list[ServiceEntry]
    policies: list[dict[str, Any]] = field(default_factory=list)
    # The pods' resolver ("ip:port"), where the DNS proxy forwards what it does not answer.
    dns_upstream: str | None = None
    cluster_domain: str = "cluster.local"

    @classmethod
    def load(cls, path: str) -> "ZtunnelConfig":
        with open(path) as f:
            raw = json.load(f)
        wls = [WorkloadInfo(w["name"], w["namespace"], w["deployment"], w["service_account"], w["ip"],
                            w["node"], w["netns"], dict(w["labels"]), bool(w["in_mesh"]), bool(w["hbone"]))
               for w in raw["workloads"]]
        svcs = [ServiceEntry(s["namespace"], s["name"], s["vip"], p["port"],
                             tuple(Endpoint(e["pod"], e["ip"], e["port"]) for e in p["endpoints"]))
                for s in raw["services"] for p in s["ports"]]
        return cls(raw["node"], raw["trust_domain"], raw["istio_version"], raw["ca"]["url"],
                   raw["ca"]["dir"], raw["ca"]["root_cert"], raw["workdir"], raw["bootstrap"]["cert"],
                   raw["bootstrap"]["key"], wls, svcs, list(raw.get("policies", [])),
                   raw.get("dns", {}).get("upstream"), raw.get("dns", {}).get("domain", "cluster.local"))

    def local_pods(self) -> list[WorkloadInfo]:
        """The ambient pods this ztunnel serves: in the mesh and on its node."""
        return [w for w in self.workloads if w.in_mesh and w.node == self.node]

    def workload_by_ip(self, ip: str) -> WorkloadInfo | None:
        return next((w for w in self.workloads if w.ip == ip), None)

    def service_at(self, ip: str, port: int) -> ServiceEntry | None:
        return next((s for s in self.services if s.vip == ip and s.port == port), None)

    def services_of(self, w: WorkloadInfo) -> list[ServiceEntry]:
        key = f"{w.namespace}/{w.name}"
        return [s for s in self.services if any(e.pod == key for e in s.endpoints)]

    def inbound_service(self, w: WorkloadInfo, port: int) -> ServiceEntry | None:
        """The Service an inbound connection is counted under, as ztunnel guesses it.

        ztunnel's `guess_inbound_service`: the first Service of the destination workload
        whose (resolved) target port is the port connected to; None if there is none.
        """
        key = f"{w.namespace}/{w.name}"
        return next((s for s in self.services
                     if any(e.pod == key and e.port == port for e in s.endpoints)), None)

    @staticmethod
    def pick(svc: ServiceEntry) -> Endpoint | None:
        """ztunnel load-balances a VIP itself, before kube-proxy sees it: one random endpoint."""
        return random.choice(svc.endpoints) if svc.endpoints else None
