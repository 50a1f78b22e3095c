"""`python -m netlab.dataplane.ztunnel --config FILE`: one ztunnel for one node."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from netlab import mesh
from netlab.dataplane.policy import Evaluator
from netlab.dataplane.proxy import certs, config, lifecycle
from netlab.dataplane.proxy.admin import serve_admin, serve_metrics, serve_readiness
from netlab.dataplane.telemetry import ZtunnelTelemetry
from netlab.dataplane.ztunnel.config_dump import config_dump
from netlab.dataplane.ztunnel.proxy import PodProxy
from netlab.snapshot import ProxySnapshot

# What netlab's process zygote (kernel/zygote.py) runs once before it forks this proxy:
# `config.warm()`, the snapshot decoders worked out for every proxy it forks.
PRELOAD = ("netlab.dataplane.proxy.config",)

MODE = "ambient"  # the pods a ztunnel serves
log = logging.getLogger("ztunnel")


class Ztunnel:
    """One node's ztunnel: a proxy per local ambient pod, plus the node's admin ports."""

    def __init__(self, cfg: ProxySnapshot) -> None:
        self.cfg = cfg
        pods = cfg.local_workloads(MODE)
        self.telemetry = ZtunnelTelemetry(cfg.node, sys.stdout)
        self.certs = certs.cert_manager(cfg, pods)
        policy = Evaluator(cfg.policies)
        self.proxies = [PodProxy(p, cfg, self.certs, self.telemetry, policy) for p in pods]
        self._ready: asyncio.AbstractServer | None = None
        self._metrics: asyncio.Task[None] | None = None
        self._admin: asyncio.AbstractServer | None = None

    async def start(self) -> "Ztunnel":
        try:
            for p in self.proxies:
                await p.start()
            self._ready = await serve_readiness(mesh.HEALTH_PORT)
            self._metrics = serve_metrics(mesh.METRICS_PORT, self.telemetry.exposition)
            # As real ztunnel: its state on the admin port, localhost of its netns only.
            self._admin = await serve_admin(mesh.ADMIN_PORT, {"/config_dump": self._config_dump})
        except BaseException:
            await self.close()
            raise
        return self

    def _config_dump(self) -> bytes:
        return json.dumps(config_dump(self.cfg, self.certs), indent=1).encode()

    def announce(self) -> None:
        log.info("ztunnel for node %s serving %d pods (%s capture)",
                 self.cfg.node, len(self.proxies), self.cfg.capture)

    async def close(self) -> None:
        if self._ready is not None:
            self._ready.close()
        if self._metrics is not None:
            self._metrics.cancel()
        if self._admin is not None:
            self._admin.close()
        for p in self.proxies:
            await p.close()
        await self.certs.close()


async def run(cfg: ProxySnapshot) -> None:
    """Ready (on the ready pipe) once every pod's listeners and the admin ports are open."""
    async def start() -> Ztunnel:
        return await Ztunnel(cfg).start()

    await lifecycle.serve(start, on_ready=Ztunnel.announce)


def main(argv: list[str] | None = None) -> None:
    config.main("ztunnel", run, argv)


if __name__ == "__main__":
    main()
