"""BpfCollector: trace.c loaded through bcc, filtered in the kernel to the lab.

Why it looks the way it does:
- The lab's netns inodes (and optional ports/addresses) sit in BPF maps, so host
  traffic is dropped in the kernel and never costs a ring-buffer slot.
- Cost per packet is what limits the tracer (the hooks run inline on every packet of
  every hop), so the packet hooks send only the TCP segments a timeline needs (SYN and
  RST at every hop, FIN where its socket sends it; every segment with
  all_segments=True) plus every non-TCP packet and every drop (docs/events.md,
  trace.c).
- The compiled program is the process's, lent per trace (loaded.py): compiling and
  detaching cost ~1 s, and only the maps differ between traces. A record stamped
  before this trace's start (`_floor_ns`) is another trace's and is dropped.
- Events go through a BPF ring buffer written without wakeups. A thread drains it on
  a short timer (ring.RingReader) and only copies the raw records; flush() decodes
  them (decode.Decoder). Records that did not fit are counted in the kernel (`lost`),
  never ignored.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
import struct
import threading
import time
from collections import deque
from typing import Any, Iterable

from netlab.kernel import netns as nsmod
from netlab.observe.bpf.btf import BTF_PATH
from netlab.observe.bpf.decode import RECORD_SIZE, Decoder
from netlab.observe.bpf.loaded import PROGRAMS, Lease
from netlab.observe.bpf.offsets import kernel_offsets
from netlab.observe.bpf.program import (RINGBUF_PAGES, TRACEPOINTS, cflags, source,
                                        tracepoint_names)
from netlab.observe.bpf.ring import RingReader, count_records, split_records
from netlab.observe.bpf.tracefs import (drop_reasons, ensure_tracefs, enum_preamble,
                                        missing_tracepoints)
from netlab.observe.collector import Capability, Collector, Scope, Sink, yield_cpu
from netlab.observe.events import Event

POLL_S = 0.05  # ring drain period (no per-event wakeups)
_TS = struct.Struct("<Q")  # event_t.ts, the record's first member (bpf_ktime_get_ns)


def links(netns_names: Iterable[str]) -> tuple[dict[tuple[str, int], str], set[tuple[str, int]]]:
    """((netns name, ifindex) -> ifname, the (netns name, ifindex) of bridge devices),
    asked over netlink from inside each netns."""
    from pyroute2 import IPRoute

    table: dict[tuple[str, int], str] = {}
    bridges: set[tuple[str, int]] = set()
    for name in netns_names:
        with nsmod.entered(name):
            ipr = IPRoute()
        try:
            for link in ipr.get_links():
                table[(name, link["index"])] = link.get_attr("IFLA_IFNAME")
                info = link.get_attr("IFLA_LINKINFO")
                if info is not None and info.get_attr("IFLA_INFO_KIND") == "bridge":
                    bridges.add((name, link["index"]))
        finally:
            ipr.close()
    return table, bridges


def ifnames(netns_names: Iterable[str]) -> dict[tuple[str, int], str]:
    """(netns name, ifindex) -> ifname, asked over netlink from inside each netns."""
    return links(netns_names)[0]


def ksym(addr: int) -> str:
    """Kernel symbol+offset of a drop location. bcc's static lookup: it still works
    after stop() unloaded the programs."""
    from bcc import BPF

    return BPF.ksym(addr, show_offset=True).decode(errors="replace")


def _program() -> tuple[bytes, list[str]]:
    """trace.c as compiled for this kernel: its text (with the tracepoints' enums) and
    flags (BTF offsets). The same for every trace, so the compiled program is shared."""
    return (enum_preamble(TRACEPOINTS) + source()).encode(), cflags(kernel_offsets())


def preload() -> None:
    """Compile and attach trace.c now, so the first trace in this process need not wait
    for bcc (~0.6 s); nothing when the collector cannot run (its trace says why)."""
    if BpfCollector().can_run().ok:
        PROGRAMS.load(*_program())


class BpfCollector(Collector):
    name = "bpf"

    def __init__(self, ports: Iterable[int] = (), addresses: Iterable[str] = (),
                 all_segments: bool = False) -> None:
        """`ports`/`addresses` add to Scope.port/address: a redirect to :15001 is a
        different port from the :80 the app dialled, and both may be wanted.
        `all_segments`: emit every TCP segment at rx/tx, not only SYN/FIN/RST."""
        self.extra_ports = set(ports)
        self.extra_addrs = set(addresses)
        self.all_segments = all_segments
        self._bpf: Any = None
        self._lease: Lease | None = None
        self._floor_ns = 0  # records stamped earlier belong to an earlier trace
        self._stats0 = (0, 0)  # the kernel's (lost, purged) when this trace started
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._raw: deque[bytes] = deque()  # RingReader chunks, decoded by flush()
        self._ring: RingReader | None = None
        self._ring_lock = threading.Lock()
        self._received = 0
        self._counters = {"events": 0, "lost": 0, "purged": 0}
        self._decoder = Decoder(ksym=ksym)
        self._notify: Any = None

    def can_run(self) -> Capability:
        if os.geteuid() != 0:
            return Capability(False, "needs root (CAP_BPF + CAP_PERFMON): run as root")
        try:
            import bcc  # noqa: F401
        except ImportError:
            return Capability(False, "python module 'bcc' not importable: install "
                              "python3-bpfcc and use a venv with --system-site-packages "
                              "(the PyPI package 'bcc' is unrelated)")
        build = f"/lib/modules/{os.uname().release}/build"
        if not os.path.exists(os.path.join(build, "include")):
            return Capability(False, f"no kernel headers at {build}: install linux-headers "
                              "and point that link at the arch header directory")
        if not os.path.exists(BTF_PATH):
            return Capability(False, f"{BTF_PATH} missing: struct offsets cannot be read "
                              "(kernel needs CONFIG_DEBUG_INFO_BTF)")
        why = ensure_tracefs()
        if why:
            return Capability(False, why)
        missing = missing_tracepoints(TRACEPOINTS)
        if missing:
            return Capability(False, "tracepoints missing: " + ", ".join(missing))
        if not drop_reasons():
            return Capability(False, "skb:kfree_skb format has no reason table")
        try:
            kernel_offsets()
        except (KeyError, ValueError) as e:
            return Capability(False, f"BTF lookup failed: {e}")
        return Capability(True, f"bcc on tracepoints {tracepoint_names()}; "
                          "offsets from BTF; ring buffer")

    def start(self, scope: Scope, sink: Sink) -> None:
        self._sink = sink
        # A Tracer's sink can be told "raw data arrived" (it then calls flush());
        # a plain callable gets decoded events from the drain thread instead.
        self._notify = getattr(sink, "notify", None)
        reasons = drop_reasons()
        names, bridges = links(scope.netns)
        self._decoder = Decoder(reasons=reasons, ifnames=names, bridges=bridges,
                                inode_to_name={ino: n for n, ino in scope.netns.items()},
                                ksym=ksym)
        self._lease = PROGRAMS.acquire(*_program())
        self._bpf = self._lease.bpf
        try:
            self._open(scope, reasons)
        except BaseException:
            self._close_ring()
            lease, self._lease, self._bpf = self._lease, None, None
            PROGRAMS.release(lease)
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="netlab-bpf", daemon=True)
        self._thread.start()

    def _open(self, scope: Scope, reasons: dict[int, str]) -> None:
        """Point the (possibly borrowed) program at this trace. Order matters
        (loaded.py): drop what an earlier trace left in the ring, set the time floor
        (bpf_ktime_get_ns is CLOCK_MONOTONIC), write the filters, and open the netns
        filter last, so no record of this trace is judged by an earlier trace's cfg."""
        b = self._bpf
        assert self._lease is not None
        self._ring = RingReader(b[b"events"].map_fd, RINGBUF_PAGES * mmap.PAGESIZE,
                                RECORD_SIZE)
        self._ring.skip()
        self._stats0 = self._kernel_stats()
        self._floor_ns = time.monotonic_ns()
        ports = set(self.extra_ports) | ({scope.port} if scope.port else set())
        addrs = set(self.extra_addrs) | ({scope.address} if scope.address else set())
        for p in ports:
            self._lease.ports.add(p)
            b[b"port_allow"][ctypes.c_int(p)] = ctypes.c_uint8(1)
        for a in addrs:
            packed = struct.unpack("<I", socket.inet_aton(a))[0]  # same bytes as kernel
            b[b"addr_allow"][ctypes.c_uint32(packed)] = ctypes.c_uint8(1)
        cfg = b[b"cfg"]
        leaf = cfg.Leaf()
        leaf.use_port, leaf.use_addr = int(bool(ports)), int(bool(addrs))
        leaf.all_segments = int(self.all_segments)
        leaf.purge_reason = next((n for n, r in reasons.items() if r == "QUEUE_PURGE"), 0)
        cfg[ctypes.c_int(0)] = leaf
        allow = b[b"netns_allow"]
        for ino in scope.netns.values():
            allow[ctypes.c_uint32(ino)] = ctypes.c_uint8(1)

    def _close_ring(self) -> None:
        with self._ring_lock:
            if self._ring is not None:
                self._ring.close()
                self._ring = None

    def _drain_ring(self) -> None:
        # Copy the raw records only; decoding happens in flush().
        with self._ring_lock:
            if self._ring is not None:
                self._ring.read(self._raw)
        if self._raw:
            if self._notify is not None:
                self._notify()
            else:
                for ev in self.flush():
                    self._sink(ev)

    def _poll(self) -> None:
        yield_cpu()
        while not self._stop.wait(POLL_S):
            self._drain_ring()

    def flush(self) -> list[Event]:
        """Decode every record copied so far (thread-safe against the drain thread)."""
        out: list[Event] = []
        raw, record, floor, ts = self._raw, self._decoder.record, self._floor_ns, _TS.unpack_from
        while raw:
            try:
                chunk = raw.popleft()
            except IndexError:
                break
            for rec in split_records(chunk, RECORD_SIZE):
                if ts(rec)[0] >= floor:
                    out.append(record(rec))
        self._received += len(out)
        return out

    def _kernel_stats(self) -> tuple[int, int]:
        """The kernel's (lost, purged) counters (trace.c STAT_*), summed over CPUs,
        since the program was loaded."""
        stats = self._bpf[b"stats"]
        lost, purged = (sum(int(v) for v in stats[ctypes.c_int(i)]) for i in range(2))
        return lost, purged

    def _stats(self) -> tuple[int, int]:
        """(lost, purged) during this trace: records the ring had no room for, and
        socket queue purges not sent."""
        lost, purged = self._kernel_stats()
        return lost - self._stats0[0], purged - self._stats0[1]

    def stop(self) -> dict[str, int]:
        if self._bpf is None:
            return dict(self._counters)
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
            self._thread = None
        with self._ring_lock:
            if self._ring is not None:
                self._ring.read(self._raw)  # drain what is already queued
                self._ring.close()
                self._ring = None
        lost, purged = self._stats()
        lease, self._lease, self._bpf = self._lease, None, None
        if lease is not None:
            PROGRAMS.release(lease)  # empties the scope; unloads a private program
        if self._notify is None:
            for ev in self.flush():
                self._sink(ev)
        # events = records received from the kernel (decoded now or by the next flush)
        pending = count_records(self._raw, RECORD_SIZE)
        self._counters.update(events=self._received + pending, lost=lost, purged=purged)
        return dict(self._counters)
