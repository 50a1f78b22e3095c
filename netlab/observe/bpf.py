"""BPF collector: tracepoints on the packet path, filtered in the kernel to the lab.

Why it looks the way it does:
- This kernel has tracepoints but no kprobes, so every hook is a TRACEPOINT_PROBE.
- The installed headers (Debian 6.1) do not describe the running kernel (6.18): sk_buff,
  net_device and sock have other layouts. Member offsets therefore come from the
  kernel's own BTF (/sys/kernel/btf/vmlinux) at run time and reach bpf/trace.c as
  -D macros; the headers only serve bcc's compiler preamble.
- Drop-reason numbers change between kernels, so their names are read at run time
  from the kfree_skb format file (`__print_symbolic`).
- The lab's netns inodes (and optional ports/addresses) sit in BPF maps, so host
  traffic is dropped in the kernel and never costs a ring-buffer slot.
- Cost per packet is what limits the tracer (the hooks run inline on every packet of
  every hop), so the packet hooks send only the TCP segments a timeline needs (SYN and
  RST at every hop, FIN where its socket sends it; every segment with
  all_segments=True) plus every non-TCP packet and every drop, and decide that from
  two small reads before anything else (docs/events.md, bpf/trace.c).
- Events go through a BPF ring buffer written without wakeups. A thread drains it on
  a short timer through mmap (RingReader) and only copies the raw records; decoding
  into Event objects happens when someone reads the events (Tracer.events /
  wait_for / stop), off the packet path. Records that did not fit are counted in the
  kernel (`lost`), never ignored.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import socket
import struct
import threading
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator

from netlab.kernel import netns as nsmod
from netlab.observe.collector import Capability, Collector, Scope, Sink
from netlab.observe.events import Event

TRACEFS = "/sys/kernel/tracing"
BTF_PATH = "/sys/kernel/btf/vmlinux"
SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "trace.c"

TRACEPOINTS = (
    "net/netif_receive_skb", "net/net_dev_queue", "skb/kfree_skb",
    "tcp/tcp_retransmit_synack", "tcp/tcp_send_reset", "tcp/tcp_receive_reset",
    "sock/inet_sock_set_state",
)

KINDS = {1: "rx", 2: "tx", 3: "drop", 4: "retransmit_synack", 5: "send_reset",
         6: "recv_reset", 7: "sock_state"}
DEV_FROM = {1: "skb_dev", 2: "dst_dev", 3: "sock"}
# include/net/tcp_states.h: part of the socket ABI (ss(8) prints these), stable.
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
              5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
              10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
ENUM_HEADERS = {"skb_drop_reason": "net/dropreason.h", "sk_rst_reason": "net/rstreason.h"}
ETHERTYPES = {0x0800: "ipv4", 0x0806: "arp", 0x86DD: "ipv6"}
PROTOS = {6: "tcp", 17: "udp", 1: "icmp"}
RINGBUF_PAGES = 8192  # 32 MiB: ~300k events, ~5 s of a 2,000 conn/s lab (30 events each)
POLL_S = 0.05  # ring drain period (no per-event wakeups)

# (macro, struct, member path) resolved through BTF.
OFFSETS = (
    ("OFF_SKB_HEAD", "sk_buff", "head"),
    ("OFF_SKB_NETWORK_HEADER", "sk_buff", "network_header"),
    ("OFF_SKB_PROTOCOL", "sk_buff", "protocol"),
    ("OFF_SKB_MARK", "sk_buff", "mark"),
    ("OFF_SKB_LEN", "sk_buff", "len"),
    ("OFF_SKB_DEV", "sk_buff", "dev"),
    ("OFF_SKB_SK", "sk_buff", "sk"),
    ("OFF_SKB_REFDST", "sk_buff", "_skb_refdst"),
    ("OFF_DEV_IFINDEX", "net_device", "ifindex"),
    ("OFF_DEV_NAME", "net_device", "name"),
    ("OFF_DEV_ND_NET", "net_device", "nd_net.net"),
    ("OFF_NET_INUM", "net", "ns.inum"),
    ("OFF_SK_NET", "sock_common", "skc_net.net"),
    ("OFF_DST_DEV", "dst_entry", "dev"),
)


class RawEvent(ctypes.Structure):
    """Mirror of struct event_t in bpf/trace.c (same order, natural alignment)."""

    _fields_ = [
        ("ts", ctypes.c_uint64), ("skbaddr", ctypes.c_uint64), ("location", ctypes.c_uint64),
        ("netns", ctypes.c_uint32), ("ifindex", ctypes.c_uint32), ("kind", ctypes.c_uint32),
        ("reason", ctypes.c_uint32), ("mark", ctypes.c_uint32), ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32), ("seq", ctypes.c_uint32), ("ack", ctypes.c_uint32),
        ("len", ctypes.c_uint32), ("oldstate", ctypes.c_int32), ("newstate", ctypes.c_int32),
        ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16), ("proto", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8), ("has_tuple", ctypes.c_uint8),
        ("dev_from", ctypes.c_uint8), ("ifname", ctypes.c_char * 16),
        ("l3proto", ctypes.c_uint16), ("pad0", ctypes.c_uint16), ("pad1", ctypes.c_uint32),
    ]


# ---------------------------------------------------------------- BTF offsets

_BTF_EXTRA = {1: 4, 3: 12, 4: 12, 5: 12, 6: 8, 13: 8, 14: 4, 15: 12, 17: 4, 19: 12}
_PER_VLEN = {4, 5, 6, 13, 15, 19}
_MODIFIERS = {8, 9, 10, 11, 18}  # typedef, volatile, const, restrict, type_tag


class Btf:
    """Just enough of a BTF reader to find member offsets in the running kernel."""

    def __init__(self, path: str = BTF_PATH) -> None:
        self.data = Path(path).read_bytes()
        magic, _v, _f, hdr, toff, tlen, soff, _slen = struct.unpack_from("<HBBIIIII",
                                                                          self.data, 0)
        if magic != 0xEB9F:
            raise ValueError(f"{path}: not BTF")
        self.strs = hdr + soff
        self.types: list[tuple[int, int, int, int, int, int]] = [(0, 0, 0, 0, 0, 0)]
        self.by_name: dict[tuple[str, int], int] = {}
        pos, end = hdr + toff, hdr + toff + tlen
        while pos < end:
            name_off, info, size = struct.unpack_from("<III", self.data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            self.types.append((pos, kind, vlen, info >> 31, name_off, size))
            if kind in (4, 5) and name_off:
                self.by_name.setdefault((self._str(name_off), kind), len(self.types) - 1)
            extra = _BTF_EXTRA.get(kind, 0)
            pos += 12 + (extra * vlen if kind in _PER_VLEN else extra)

    def _str(self, off: int) -> str:
        start = self.strs + off
        return self.data[start:self.data.index(b"\0", start)].decode()

    def _strip(self, tid: int) -> int:
        while self.types[tid][1] in _MODIFIERS:
            tid = self.types[tid][5]
        return tid

    def _member(self, tid: int, name: str) -> tuple[int, int] | None:
        """(byte offset, type id) of `name`, looking through anonymous members."""
        pos, kind, vlen, kflag, _n, _s = self.types[self._strip(tid)]
        if kind not in (4, 5):
            return None
        for i in range(vlen):
            m_name, m_type, m_off = struct.unpack_from("<III", self.data, pos + 12 + 12 * i)
            bits = m_off & 0xFFFFFF if kflag else m_off
            if m_name and self._str(m_name) == name:
                return bits // 8, m_type
            if not m_name:
                inner = self._member(m_type, name)
                if inner:
                    return bits // 8 + inner[0], inner[1]
        return None

    def offset(self, struct_name: str, path: str) -> int:
        tid = self.by_name.get((struct_name, 4)) or self.by_name.get((struct_name, 5))
        if tid is None:
            raise KeyError(f"BTF has no struct {struct_name}")
        total = 0
        for part in path.split("."):
            found = self._member(tid, part)
            if found is None:
                raise KeyError(f"BTF: struct {struct_name} has no member {path}")
            total += found[0]
            tid = found[1]
        return total


# sk_buff members the packet hooks read in two blocks (trace.c SKB_HOT / SKB_AT), with
# their sizes: the few needed to decide on every packet, and the rest, read only for
# a packet that is sent.
SKB_HOT = {"OFF_SKB_HEAD": 8, "OFF_SKB_NETWORK_HEADER": 2, "OFF_SKB_PROTOCOL": 2}
SKB_BLOCK = {"OFF_SKB_MARK": 4, "OFF_SKB_LEN": 4, "OFF_SKB_DEV": 8, "OFF_SKB_SK": 8,
             "OFF_SKB_REFDST": 8}
# net_device members read as one block when they lie within DEV_BLOCK_MAX bytes.
DEV_BLOCK = {"OFF_DEV_IFINDEX": 4, "OFF_DEV_ND_NET": 8, "OFF_DEV_NAME": 16}
DEV_BLOCK_MAX = 192


def kernel_offsets() -> dict[str, int]:
    """OFF_* macros from BTF, plus the 8-aligned spans of sk_buff that cover SKB_HOT
    (SKB_HOT_START/END) and SKB_BLOCK (SKB_BLK_START/END), each read in one go, and
    DEV_BLK_START/END for DEV_BLOCK when it is small enough."""
    btf = Btf()
    offs = {macro: btf.offset(s, p) for macro, s, p in OFFSETS}
    for prefix, members in (("SKB_HOT", SKB_HOT), ("SKB_BLK", SKB_BLOCK)):
        offs[f"{prefix}_START"] = min(offs[m] for m in members) // 8 * 8
        offs[f"{prefix}_END"] = max(offs[m] + size for m, size in members.items())
    start = min(offs[m] for m in DEV_BLOCK) // 8 * 8
    end = max(offs[m] + size for m, size in DEV_BLOCK.items())
    if end - start <= DEV_BLOCK_MAX:
        offs["DEV_BLK_START"], offs["DEV_BLK_END"] = start, end
    return offs


# ---------------------------------------------------------------- run-time tables

def drop_reasons(tracefs: str = TRACEFS) -> dict[int, str]:
    """Number -> name from kfree_skb's `__print_symbolic(REC->reason, ...)`."""
    fmt = Path(tracefs, "events/skb/kfree_skb/format").read_text()
    at = fmt.find("__print_symbolic(REC->reason")
    if at < 0:
        return {}
    return {int(n): name for n, name in re.findall(r'\{\s*(\d+)\s*,\s*"(\w+)"\s*\}', fmt[at:])}


def tcp_flags(bits: int) -> str:
    """tcpdump's letters, in its order: S F R P then A (e.g. "SA", "FA", "R")."""
    out = ""
    for bit, letter in ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x20, "U"),
                        (0x40, "E"), (0x80, "W"), (0x10, "A")):
        if bits & bit:
            out += letter
    return out or "."


def ifnames(netns_names: Iterable[str]) -> dict[tuple[str, int], str]:
    """(netns name, ifindex) -> ifname, asked over netlink from inside each netns."""
    from pyroute2 import IPRoute

    table: dict[tuple[str, int], str] = {}
    for name in netns_names:
        with nsmod.entered(name):
            ipr = IPRoute()
        try:
            for link in ipr.get_links():
                table[(name, link["index"])] = link.get_attr("IFLA_IFNAME")
        finally:
            ipr.close()
    return table


def enum_preamble(tracefs: str = TRACEFS) -> str:
    """Declare every `enum X` a hooked tracepoint uses, so bcc can build its args structs.

    The headers may predate the running kernel (6.1 headers lack enum sk_rst_reason).
    A real header is included when it exists; otherwise a 4-byte placeholder enum is
    declared: bpf/trace.c only copies these fields as integers.
    """
    build = Path(f"/lib/modules/{os.uname().release}")
    lines = []
    seen: set[str] = set()
    for tp in TRACEPOINTS:
        fmt = Path(tracefs, "events", tp, "format").read_text()
        for enum in re.findall(r"field:enum (\w+) ", fmt):
            if enum in seen:
                continue
            seen.add(enum)
            header = ENUM_HEADERS.get(enum)
            if header and any((build / d / "include" / header).exists()
                              for d in ("build", "source")):
                lines.append(f"#include <{header}>")
            else:
                lines.append(f"enum {enum} {{ __netlab_{enum}_placeholder = 0 }};")
    return "\n".join(lines) + "\n"


def _ensure_tracefs() -> str | None:
    if os.path.exists(os.path.join(TRACEFS, "events")):
        return None
    rc = os.system(f"mount -t tracefs nodev {TRACEFS} >/dev/null 2>&1")
    if rc != 0 or not os.path.exists(os.path.join(TRACEFS, "events")):
        return f"tracefs is not mounted at {TRACEFS} and mounting it failed " \
               f"(try: mount -t tracefs nodev {TRACEFS})"
    return None


# ---------------------------------------------------------------- ring buffer

DRAIN_NICE = 10


def yield_cpu() -> None:
    """Lower the calling thread's priority (Linux: setpriority on its TID). The drain
    threads only copy bytes into memory and the ring holds seconds of events, so the
    traced dataplane gets the CPU first; if they ever fall behind, the kernel counts
    the records that did not fit (`lost`)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DRAIN_NICE)
    except OSError:
        pass

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
RB_BUSY, RB_DISCARD, RB_HDR = 1 << 31, 1 << 30, 8


class RingReader:
    """Consumer side of a BPF ring buffer map, read through mmap (the layout is the
    kernel's uapi: a consumer page we write, a producer page, then the data area
    mapped twice so a record that wraps is contiguous). No per-record call into C or
    ctypes: when every record has the same size (trace.c only writes struct event_t),
    one pass checks all their headers at C speed (a strided memoryview) and copies the
    committed span as one chunk. Chunks hold records with their 8-byte headers;
    split them with `records()`."""

    def __init__(self, map_fd: int, size: int, record_size: int) -> None:
        page = mmap.PAGESIZE
        self.size, self.mask = size, size - 1
        self.record_size = record_size
        self.stride = (record_size + RB_HDR + 7) & ~7
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=page)
        self._data = memoryview(self._prod)[page:]
        self._pos = _U64.unpack_from(self._cons, 0)[0]

    def read(self, out: deque[bytes]) -> int:
        """Append the committed records to out as one chunk; return how many."""
        prod = _U64.unpack_from(self._prod, 0)[0]
        pos, n = self._pos, (prod - self._pos) // self.stride
        if n <= 0:
            return 0
        at = pos & self.mask
        span = self._data[at:at + n * self.stride]
        headers = span.cast("I")[::self.stride // 4]
        if headers.tolist().count(self.record_size) != n:
            # a record still being written (busy bit), or not ours: go one by one
            n = 0
            for h in headers.tolist():
                if h != self.record_size:
                    break
                n += 1
            if n == 0 and headers[0] & RB_BUSY == 0:
                raise RuntimeError(f"ring buffer record of {headers[0] & ~RB_DISCARD} "
                                   f"bytes, expected {self.record_size}")
        if n:
            out.append(bytes(span[:n * self.stride]))
            self._pos = pos + n * self.stride
            _U64.pack_into(self._cons, 0, self._pos)  # hand the space back
        span.release()
        return n

    def close(self) -> None:
        self._data.release()
        self._prod.close()
        self._cons.close()



def split_records(chunk: bytes, record_size: int) -> Iterator[bytes]:
    """The records of a RingReader chunk, without their headers."""
    stride = (record_size + RB_HDR + 7) & ~7
    for off in range(0, len(chunk), stride):
        yield chunk[off + RB_HDR:off + RB_HDR + record_size]


# ---------------------------------------------------------------- the collector

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
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._raw: deque[bytes] = deque()  # RingReader chunks, decoded by flush()
        self._ring: RingReader | None = None
        self._ring_lock = threading.Lock()
        self._received = 0
        self._counters = {"events": 0, "lost": 0, "purged": 0}
        self._reasons: dict[int, str] = {}
        self._ifnames: dict[tuple[str, int], str] = {}
        self._inode_to_name: dict[int, str] = {}
        self._ksyms: dict[int, str] = {}
        self._addrs: dict[int, str] = {}
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
        why = _ensure_tracefs()
        if why:
            return Capability(False, why)
        missing = [tp for tp in TRACEPOINTS
                   if not os.path.exists(os.path.join(TRACEFS, "events", tp, "format"))]
        if missing:
            return Capability(False, "tracepoints missing: " + ", ".join(missing))
        if not drop_reasons():
            return Capability(False, "skb:kfree_skb format has no reason table")
        try:
            kernel_offsets()
        except (KeyError, ValueError) as e:
            return Capability(False, f"BTF lookup failed: {e}")
        return Capability(True, "bcc on tracepoints " + ", ".join(
            tp.replace("/", ":") for tp in TRACEPOINTS) + "; offsets from BTF; ring buffer")

    def start(self, scope: Scope, sink: Sink) -> None:
        from bcc import BPF

        self._sink = sink
        # A Tracer's sink can be told "raw data arrived" (it then calls flush());
        # a plain callable gets decoded events from the drain thread instead.
        self._notify = getattr(sink, "notify", None)
        self._reasons = drop_reasons()
        self._inode_to_name = {ino: name for name, ino in scope.netns.items()}
        self._ifnames = ifnames(scope.netns)
        cflags = [f"-D{k}={v}" for k, v in kernel_offsets().items()]
        cflags += [f"-DRINGBUF_PAGES={RINGBUF_PAGES}", "-Wno-macro-redefined"]
        self._bpf = BPF(text=(enum_preamble() + SOURCE.read_text()).encode(), cflags=cflags)
        b = self._bpf
        allow = b[b"netns_allow"]
        for ino in scope.netns.values():
            allow[ctypes.c_uint32(ino)] = ctypes.c_uint8(1)
        ports = set(self.extra_ports) | ({scope.port} if scope.port else set())
        addrs = set(self.extra_addrs) | ({scope.address} if scope.address else set())
        for p in ports:
            b[b"port_allow"][ctypes.c_int(p)] = ctypes.c_uint8(1)
        for a in addrs:
            packed = struct.unpack("<I", socket.inet_aton(a))[0]  # same bytes as kernel
            b[b"addr_allow"][ctypes.c_uint32(packed)] = ctypes.c_uint8(1)
        cfg = b[b"cfg"]
        leaf = cfg.Leaf()
        leaf.use_port, leaf.use_addr = int(bool(ports)), int(bool(addrs))
        leaf.all_segments = int(self.all_segments)
        leaf.purge_reason = next((n for n, r in self._reasons.items() if r == "QUEUE_PURGE"), 0)
        cfg[ctypes.c_int(0)] = leaf
        self._ring = RingReader(b[b"events"].map_fd, RINGBUF_PAGES * mmap.PAGESIZE,
                                ctypes.sizeof(RawEvent))
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="netlab-bpf", daemon=True)
        self._thread.start()

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
        raw, size = self._raw, ctypes.sizeof(RawEvent)
        while raw:
            try:
                chunk = raw.popleft()
            except IndexError:
                break
            for rec in split_records(chunk, size):
                out.append(self.decode(RawEvent.from_buffer_copy(rec)))
        self._received += len(out)
        return out

    def _ksym(self, addr: int) -> str | None:
        if not addr:
            return None
        if addr not in self._ksyms:
            from bcc import BPF  # static: still works after stop() unloaded the programs

            self._ksyms[addr] = BPF.ksym(addr, show_offset=True).decode(errors="replace")
        return self._ksyms[addr]

    def _addr(self, packed: int) -> str:
        s = self._addrs.get(packed)
        if s is None:
            s = self._addrs[packed] = socket.inet_ntoa(struct.pack("<I", packed))
        return s

    def decode(self, raw: RawEvent) -> Event:
        kind = KINDS.get(raw.kind, str(raw.kind))
        ns_name = self._inode_to_name.get(raw.netns)
        ev = Event(ts_ns=raw.ts, source="bpf", kind=kind, netns_inode=raw.netns,
                   netns=ns_name)
        extra: dict[str, Any] = {}
        if raw.dev_from in (1, 2):
            ev.ifindex = raw.ifindex
            ev.ifname = (self._ifnames.get((ns_name or "", raw.ifindex))
                         or raw.ifname.decode(errors="replace") or None)
            if raw.dev_from == 2:
                extra["dev_from"] = "route"  # skb had no device yet (OUTPUT hook)
        if raw.has_tuple:
            ev.proto = PROTOS.get(raw.proto, str(raw.proto))
            ev.saddr = self._addr(raw.saddr)
            ev.daddr = self._addr(raw.daddr)
            if raw.proto in (6, 17):
                ev.sport, ev.dport = raw.sport, raw.dport
        if raw.proto == 6 and kind in ("rx", "tx", "drop", "send_reset") and raw.tcp_flags:
            ev.tcp_flags = tcp_flags(raw.tcp_flags)
            if kind != "send_reset":
                ev.seq, ev.ack = raw.seq, raw.ack
        if kind in ("rx", "tx", "drop"):
            ev.mark = raw.mark
            if not raw.has_tuple:
                extra["ethertype"] = ETHERTYPES.get(raw.l3proto, hex(raw.l3proto))
            extra["len"] = raw.len
            extra["skb"] = hex(raw.skbaddr)
        if kind == "drop":
            ev.reason = self._reasons.get(raw.reason, f"reason_{raw.reason}")
            loc = self._ksym(raw.location)
            if loc:
                extra["location"] = loc
        if kind == "sock_state":
            extra["oldstate"] = TCP_STATES.get(raw.oldstate, str(raw.oldstate))
            extra["newstate"] = TCP_STATES.get(raw.newstate, str(raw.newstate))
        if kind == "send_reset":
            extra["sk_state"] = TCP_STATES.get(raw.oldstate, "none")  # 0: no socket
        ev.extra = extra
        return ev

    def _stats(self) -> tuple[int, int]:
        """(lost, purged): records the ring had no room for, and socket queue purges
        not sent (trace.c STAT_*), summed over CPUs from the kernel's counters."""
        stats = self._bpf[b"stats"]
        lost, purged = (sum(int(v) for v in stats[ctypes.c_int(i)]) for i in range(2))
        return lost, purged

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
        self._bpf.cleanup()
        self._bpf = None
        if self._notify is None:
            for ev in self.flush():
                self._sink(ev)
        # events = records received from the kernel (decoded now or by the next flush)
        stride = (ctypes.sizeof(RawEvent) + RB_HDR + 7) & ~7
        pending = sum(len(c) for c in self._raw) // stride
        self._counters.update(events=self._received + pending, lost=lost, purged=purged)
        return dict(self._counters)
