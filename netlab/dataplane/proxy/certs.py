"""A proxy's credentials: a node-bound bootstrap identity, then workload certs from the CA.

Real proxies prove who they are with their Kubernetes service-account token. netlab has
no API server, so the bootstrap certificate (SAN `netlab://node/<node>`) is minted
here at start from the lab CA's directory: that step stands in for the kubelet
handing the proxy its token and is the only time the CA key is read outside the CA.
Every workload certificate afterwards is requested over the CA's mTLS API and is
subject to its node check (impersonation only for service accounts on this node).
"""

from __future__ import annotations

import os
from typing import Iterable

from netlab.dataplane.ca import CertClient, LabCA
from netlab.dataplane.identity import CertManager
from netlab.snapshot import ProxySnapshot, Workload


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def bootstrap(cfg: ProxySnapshot) -> tuple[bytes, bytes, bytes]:
    """(cert, key, root) PEM for this node's proxy, also kept under its workdir."""
    os.makedirs(cfg.workdir, exist_ok=True)
    ca = LabCA(cfg.ca.dir, cfg.trust_domain)
    cert, key = ca.issue_bootstrap(cfg.node)
    _write(cfg.bootstrap.cert, cert, 0o644)
    _write(cfg.bootstrap.key, key, 0o600)
    return cert, key, ca.root_pem


def pod_bootstrap(cfg: ProxySnapshot, pod: Workload) -> tuple[bytes, bytes, bytes]:
    """(cert, key, root) PEM bound to `pod` (a proxy that runs as the pod: the waypoint).

    The stand-in for the pod's projected service-account token: the CA answers it with
    the pod's own identity only (`LabCA.authorize`).
    """
    os.makedirs(cfg.workdir, exist_ok=True)
    ca = LabCA(cfg.ca.dir, cfg.trust_domain)
    cert, key = ca.issue_pod_bootstrap(pod.namespace, pod.name, pod.service_account)
    _write(cfg.bootstrap.cert, cert, 0o644)
    _write(cfg.bootstrap.key, key, 0o600)
    return cert, key, ca.root_pem


def pod_cert_manager(cfg: ProxySnapshot, pod: Workload) -> CertManager:
    """A manager for the one identity of a proxy that runs as `pod`, prefetched at once."""
    cert, key, root = pod_bootstrap(cfg, pod)
    client = CertClient(cfg.ca.url, cert, key, root, cfg.trust_domain)
    mgr = CertManager(client.fetch)
    mgr.start()
    mgr.prefetch(pod.namespace, pod.service_account)
    return mgr


def cert_manager(cfg: ProxySnapshot, serves: Iterable[Workload]) -> CertManager:
    """A manager fetching only through the CA API; prefetches the identities of `serves`.

    Must run inside the event loop: the manager's fetch workers start here.
    """
    cert, key, root = bootstrap(cfg)
    client = CertClient(cfg.ca.url, cert, key, root, cfg.trust_domain)
    mgr = CertManager(client.fetch)
    mgr.start()
    for sa in sorted({(w.namespace, w.service_account) for w in serves}):
        mgr.prefetch(*sa)
    return mgr
