"""ztunnel's `/config_dump`: what one node's ztunnel holds, as JSON, for `netlab ztunnel-config`.

Real ztunnel serves its state on the admin port (15000, localhost only) under
`/config_dump`, and `istioctl ztunnel-config` reads it there. netlab's ztunnel does the
same in its node netns. Workloads, services and policies are the snapshot it runs
with (the WDS stand-in); certificates are the ones it holds in memory right now,
which is why this is served by the process and not read from a file.

The shape follows ztunnel's dump where netlab has the fact (camelCase keys,
`workloadIps`, `protocol` HBONE|TCP, certificates with `identity`, `state` and a
`certChain` of `{serialNumber, validFrom, expirationTime}`); docs/ztunnel-config.md
lists what differs.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from cryptography import x509

from netlab import mesh
from netlab.dataplane.identity import CertManager, WorkloadCert
from netlab.snapshot import Policy, ProxySnapshot, Service, Workload

MODE = "ambient"  # the pods a ztunnel serves (and holds certificates for)


def config_dump(cfg: ProxySnapshot, certs: CertManager, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    return {
        "node": cfg.node,
        "trustDomain": cfg.trust_domain,
        "workloads": [workload(w, cfg) for w in cfg.workloads],
        "services": [service(s) for s in cfg.services],
        "policies": [policy(p) for p in cfg.policies],
        "certificates": certificates(cfg, certs, now),
    }


def workload(w: Workload, cfg: ProxySnapshot) -> dict[str, Any]:
    return {
        "name": w.name, "namespace": w.namespace, "workloadIps": [w.ip] if w.ip else [],
        "node": w.node, "serviceAccount": w.service_account, "workloadName": w.workload_name,
        "workloadType": "pod", "canonicalName": w.canonical_service,
        "canonicalRevision": w.canonical_revision, "trustDomain": cfg.trust_domain,
        "identity": w.identity(cfg.trust_domain),
        # ztunnel tunnels to HBONE workloads only: ambient pods and sidecars that take HBONE.
        "protocol": "HBONE" if w.speaks_hbone else "TCP",
        "waypoint": w.waypoint, "meshMode": w.mode or "none", "status": "Healthy",
    }


def service(s: Service) -> dict[str, Any]:
    return {
        "name": s.name, "namespace": s.namespace, "hostname": s.fqdn, "vips": [s.vip],
        "ports": {str(p.port): sorted({e.port for e in p.endpoints}) for p in s.ports},
        "endpoints": sorted({e.pod for p in s.ports for e in p.endpoints}),
        "waypoint": s.waypoint,
    }


def policy(p: Policy) -> dict[str, Any]:
    """An AuthorizationPolicy as ztunnel's Authorization (action, scope), or a PeerAuthentication.

    istiod hands ztunnel PeerAuthentications converted into DENY policies
    (`converted_peer_authentication_<name>`, `istio_converted_static_strict`); netlab's
    ztunnel reads them as they are, so they are listed as they are, with their mode."""
    spec = p.spec or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    if spec.get("targetRefs") or spec.get("targetRef"):
        scope = "TargetRefs"  # applied by a waypoint, not by ztunnel
    elif selector:
        scope = "WorkloadSelector"
    elif p.namespace == mesh.ROOT_NAMESPACE:
        scope = "Global"
    else:
        scope = "Namespace"
    if p.kind == "PeerAuthentication":
        action = "mTLS " + (((spec.get("mtls") or {}).get("mode")) or "UNSET")
    else:
        action = str(spec.get("action") or "ALLOW").capitalize()
    return {"kind": p.kind, "name": p.name, "namespace": p.namespace, "action": action, "scope": scope,
            "selector": dict(selector), "rules": len(spec.get("rules") or [])}


def certificates(cfg: ProxySnapshot, certs: CertManager, now: float) -> list[dict[str, Any]]:
    """One entry per identity this ztunnel serves: the leaf and the root it chains to."""
    out = []
    for ns, sa in sorted({(w.namespace, w.service_account) for w in cfg.local_workloads(MODE)}):
        uri = mesh.spiffe_uri(cfg.trust_domain, ns, sa)
        cert = certs.current(ns, sa)
        if cert is None:
            out.append({"identity": uri, "state": "Initializing", "certChain": []})
            continue
        state = "Available" if not cert.expired(now) else "Unavailable: certificate expired"
        out.append({"identity": uri, "state": state, "certChain": chain(cert)})
    return out


def chain(cert: WorkloadCert) -> list[dict[str, Any]]:
    root = x509.load_pem_x509_certificate(cert.root_pem)
    return [_entry(cert.serial, cert.not_before, cert.not_after),
            _entry(root.serial_number, root.not_valid_before_utc, root.not_valid_after_utc)]


def _entry(serial: int, start: datetime, end: datetime) -> dict[str, Any]:
    return {"serialNumber": str(serial), "validFrom": _rfc3339(start), "expirationTime": _rfc3339(end)}


def _rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
