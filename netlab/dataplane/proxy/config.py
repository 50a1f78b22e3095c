"""Loading a proxy's config snapshot, and the command line every proxy process shares.

`python -m netlab.dataplane.<proxy> --config FILE [--log-level L]`: the planner writes
FILE (a `netlab.snapshot.ProxySnapshot`) and the proxy reads it once at start, as a
real proxy would take its first full xDS push.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import sys
from typing import Any, Awaitable, Callable, Sequence

from netlab.dataplane import tlsutil
from netlab.snapshot import ProxySnapshot, SnapshotError, prime

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def load(path: str, proxy: str) -> ProxySnapshot:
    """The snapshot in `path`; one written for another kind of proxy is refused."""
    snap = ProxySnapshot.load(path)
    if snap.proxy != proxy:
        raise SnapshotError(f"{path} is a config for {snap.proxy!r}, not {proxy!r}")
    return snap


def tune_malloc() -> None:
    """Keep glibc from handing memory back to the kernel for every bulk buffer.

    Why: at bulk rates a proxy allocates and frees ~256 KiB buffers thousands of times
    a second (socket reads, TLS output, h2 frames). With glibc's defaults a buffer over
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
        logging.getLogger("proxy").debug("mallopt unavailable; bulk throughput will be lower")


def warm() -> None:
    """For the process zygote (kernel/zygote.py), which runs it once before it forks any
    proxy: what every ztunnel, waypoint and sidecar does first at start, done once where
    its writes are shared (CPython 3.11 writes reference counts and specialises bytecode
    as code runs; OpenSSL 3 and cryptography set up their tables on first use).

    - the decoders of both snapshot kinds worked out (`snapshot.prime`);
    - a mutual TLS 1.3 handshake between two workload certificates of a throwaway lab
      root, through netlab's own contexts and identity checks (`rehearse_tls`).

    What it saves each sidecar, measured: docs/sidecar.md, *Memory*."""
    from netlab.xds import SidecarSnapshot

    prime(ProxySnapshot)
    prime(SidecarSnapshot)
    rehearse_tls()


def rehearse_tls() -> None:
    """One HBONE-shaped handshake in memory (no socket, no network): a root and two
    workload leaves from `LabCA` in a temporary directory, the server and client
    contexts `identity` builds for them, and the peer checks both ends make. It also
    imports what TLS imports on first use (cryptography's OpenSSL backend, the IDNA
    codec)."""
    import ssl
    import tempfile

    from netlab.dataplane import identity
    from netlab.dataplane.ca import LabCA

    with tempfile.TemporaryDirectory(prefix="netlab-warm-") as d:
        ca = LabCA(d)
        server_cert, client_cert = ca.issue_workload("warm", "server"), ca.issue_workload("warm", "client")
    server_ctx, client_ctx = identity.server_context(server_cert), identity.client_context(client_cert)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(to_server, to_client, server_side=True)
    client = client_ctx.wrap_bio(to_client, to_server, server_side=False, server_hostname="warm.invalid")
    for _ in range(10):  # TLS 1.3 needs two flights each way; each pass moves one
        done = 0
        for end in (client, server):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        if done == 2:
            break
    identity.verify_server_identity(client, str(server_cert.identity))
    identity.verify_client_workload(server, ca.trust_domain)


def main(proxy: str, run: Callable[[Any], Awaitable[None]],
         argv: Sequence[str] | None = None, loader: Callable[[str], Any] | None = None) -> None:
    """Parse the shared arguments, set up logging and malloc, load the snapshot, run.

    `loader`: for proxies whose config is another snapshot class (the sidecar's
    `netlab.xds.SidecarSnapshot`); by default a `ProxySnapshot` written for `proxy`.
    """
    ap = argparse.ArgumentParser(prog=f"python -m netlab.dataplane.{proxy}")
    ap.add_argument("--config", required=True, help="the config snapshot the planner wrote")
    ap.add_argument("--log-level", default="INFO")
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_malloc()
    # The config lives in the lab's state dir, where `netlab trace --pcap` turns the TLS
    # key log on and off for the running proxies (tlsutil.KEYLOG_SWITCH).
    tlsutil.follow_keylog_switch(os.path.join(os.path.dirname(os.path.abspath(a.config)),
                                              tlsutil.KEYLOG_SWITCH))
    try:
        snap = loader(a.config) if loader is not None else load(a.config, proxy)
    except (OSError, SnapshotError) as e:
        sys.exit(f"{proxy}: cannot load {a.config}: {e}")
    asyncio.run(run(snap))
