"""One sidecar process: credentials, then privileges dropped, listeners, admin ports, ready.

Order matters:
1. As root, mint the pod-bound bootstrap (`proxy.certs.pod_cert_manager`): the stand-in for
   the kubelet handing the pod its service-account token. It can only ever get this pod's
   own identity from the CA (`LabCA.authorize`), never a node's.
2. Drop to what Istio's injection template runs istio-proxy as: uid/gid 1337 under REDIRECT
   (the capture rules exempt the proxy by `--uid-owner 1337`), uid 0 with gid 1337 under
   TPROXY (NET_ADMIN for IP_TRANSPARENT and marks; exempt by `--gid-owner 1337`). Every
   socket opened afterwards is owned by that uid/gid.
3. Listeners, then 15020/15090 metrics and 15021 readiness, then the ready pipe.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from functools import partial

from prometheus_client import CollectorRegistry

from netlab import mesh
from netlab.dataplane.ca import CAError
from netlab.dataplane.envoy.accesslog import AccessLog
from netlab.dataplane.envoy.stats import IstioStats, exposition
from netlab.dataplane.proxy import certs
from netlab.dataplane.proxy.admin import serve_metrics, serve_readiness
from netlab.dataplane.sidecar.context import Env
from netlab.dataplane.sidecar.listeners import Listeners
from netlab.dataplane.sidecar.upstream import Connector
from netlab.xds import SidecarSnapshot

log = logging.getLogger("sidecar")
CA_WAIT = 30.0


def run_as(capture: str) -> tuple[int, int]:
    """(uid, gid) of istio-proxy for the interception mode (injection-template.yaml)."""
    return (0 if capture == "tproxy" else mesh.PROXY_UID), mesh.PROXY_GID


def drop_privileges(uid: int, gid: int) -> None:
    """Become uid/gid (only when running as root and not already them)."""
    if os.geteuid() != 0:
        return
    os.setgroups([gid])
    os.setgid(gid)
    if uid != 0:
        os.setuid(uid)


class Sidecar:
    def __init__(self, snap: SidecarSnapshot) -> None:
        self.snap = snap
        self.registry = CollectorRegistry()
        self.stats = IstioStats(self.registry)
        self.access_log = AccessLog(sys.stdout, snap.access_log.encoding) \
            if snap.access_log.enabled else None
        self._admin: list[asyncio.Task[None]] = []
        self._ready: asyncio.AbstractServer | None = None
        try:
            self.certs = certs.pod_cert_manager(snap, snap.workload)  # type: ignore[arg-type]
        except PermissionError as e:
            raise SystemExit(
                f"sidecar: cannot mint the pod's bootstrap ({e}); the sidecar must start as "
                "root (the kubelet's part) and drops to uid/gid 1337 itself") from None
        drop_privileges(*run_as(snap.capture))
        self.connector = Connector(snap, self.certs)
        self.env = Env(snap, self.connector, self.stats, self.access_log)
        self.listeners = Listeners(self.env)

    async def start(self) -> "Sidecar":
        try:
            await self._first_certificate()
            await self.listeners.start()
            scrape = partial(exposition, self.registry)
            self._admin = [serve_metrics(mesh.METRICS_PORT, scrape),
                           serve_metrics(mesh.ENVOY_STATS_PORT, scrape)]
            self._ready = await serve_readiness(mesh.HEALTH_PORT)
        except BaseException:
            await self.close()
            raise
        return self

    async def _first_certificate(self) -> None:
        """Serve only with a certificate, as Envoy waits for its SDS secret; the lab CA may
        still be starting (all of a lab's processes start at once), so the CSR is retried on
        pilot-agent's kind of back-off until CA_WAIT seconds have passed."""
        pod = self.snap.workload
        async with asyncio.timeout(CA_WAIT):
            delay = 0.05
            while True:
                try:
                    await self.certs.get(pod.namespace, pod.service_account)
                    return
                except (OSError, TimeoutError, CAError) as e:
                    log.debug("CA not answering yet (%s); retrying in %.2fs", e, delay)
                await asyncio.sleep(delay)  # CSR retry back-off, not a readiness wait
                delay = min(delay * 2, 1.0)

    def announce(self) -> None:
        w = self.snap.workload
        log.info("sidecar for %s/%s (%s) ready: %d listeners, %d clusters, %s capture, uid %d gid %d%s",
                 w.namespace, w.name, w.ip, len(self.snap.listeners), len(self.snap.clusters),
                 self.snap.capture, os.getuid(), os.getgid(), ", HBONE on 15008" if self.snap.hbone else "")

    async def close(self) -> None:
        if self._ready is not None:
            self._ready.close()
        for t in self._admin:
            t.cancel()
        await self.listeners.close()
        self.env.http_pool.close()
        await self.connector.close()
        await self.certs.close()
