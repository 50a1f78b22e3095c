"""`python -m netlab.dataplane.ztunnel --config FILE`: one ztunnel for one node."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import sys

from prometheus_client import CollectorRegistry

from netlab import mesh
from netlab.dataplane.policy import Evaluator
from netlab.dataplane.proxy import lifecycle
from netlab.dataplane.telemetry import ZtunnelTelemetry
from netlab.dataplane.ztunnel import certs
from netlab.dataplane.ztunnel.proxy import PodProxy
from netlab.dataplane.ztunnel.serve import serve_metrics, serve_readiness
from netlab.snapshot import ProxySnapshot

MODE = "ambient"  # the pods a ztunnel serves
log = logging.getLogger("ztunnel")


class Ztunnel:
    """One node's ztunnel: a proxy per local ambient pod, plus the node's admin ports."""

    def __init__(self, cfg: ProxySnapshot) -> None:
        self.cfg = cfg
        self.telemetry = ZtunnelTelemetry(CollectorRegistry(), cfg.node, sys.stdout)
        self.certs = certs.cert_manager(cfg, MODE)
        policy = Evaluator(cfg.policies)
        self.proxies = [PodProxy(p, cfg, self.certs, self.telemetry, policy)
                        for p in cfg.local_workloads(MODE)]
        self._ready: asyncio.AbstractServer | None = None
        self._metrics: asyncio.Task[None] | None = None

    async def start(self) -> "Ztunnel":
        try:
            for p in self.proxies:
                await p.start()
            self._ready = await serve_readiness(mesh.HEALTH_PORT)
            self._metrics = serve_metrics(mesh.METRICS_PORT, self.telemetry)
        except BaseException:
            await self.close()
            raise
        return self

    def announce(self) -> None:
        log.info("ztunnel for node %s serving %d pods (%s capture)",
                 self.cfg.node, len(self.proxies), self.cfg.capture)

    async def close(self) -> None:
        if self._ready is not None:
            self._ready.close()
        if self._metrics is not None:
            self._metrics.cancel()
        for p in self.proxies:
            await p.close()
        await self.certs.close()


async def run(cfg: ProxySnapshot) -> None:
    """Ready (on the ready pipe) once every pod's listeners and the admin ports are open."""
    async def start() -> Ztunnel:
        return await Ztunnel(cfg).start()

    await lifecycle.serve(start, on_ready=Ztunnel.announce)


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def tune_malloc() -> None:
    """Keep glibc from handing memory back to the kernel for every bulk buffer.

    Why: at bulk rates ztunnel allocates and frees ~256 KiB buffers thousands of times a
    second (socket reads, TLS output, h2 frames). With glibc's defaults a buffer over
    128 KiB is a fresh mmap/munmap, and a heap top over 128 KiB free is trimmed with
    brk; either way every buffer costs page faults. Raising both thresholds measured
    2.3 → 3.6 Gbit/s through two ztunnels (`netlab bench hbone`), with system time per
    GB halved. The heap then keeps its peak size, which is what a proxy wants.
    """
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(M_TRIM_THRESHOLD, 256 << 20) and libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        ok = False
    if not ok:
        logging.getLogger("ztunnel").debug("mallopt unavailable; bulk throughput will be lower")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m netlab.dataplane.ztunnel")
    ap.add_argument("--config", required=True)
    ap.add_argument("--log-level", default="INFO")
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_malloc()
    asyncio.run(run(ProxySnapshot.load(a.config)))


if __name__ == "__main__":
    main()
