"""The BPF collector's pure parts: its source as package data, the tables read from
tracefs format files, ring records and their decoding. No kernel, no bcc."""

from __future__ import annotations

import ctypes
import mmap
import re
import socket
import struct
import tomllib
from collections import deque
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

from netlab.observe.bpf import program, tracefs
from netlab.observe.bpf.decode import RECORD_SIZE, Decoder, RawEvent, tcp_flags
from netlab.observe.bpf.ring import RB_HDR, count_records, split_records, stride

REPO = Path(__file__).resolve().parents[2]


def test_trace_c_is_package_data() -> None:
    """trace.c is found through importlib.resources (so a wheel install finds it too)
    and pyproject ships it."""
    res = resources.files("netlab.observe.bpf").joinpath("trace.c")
    assert res.is_file()
    text = program.source()
    assert text == res.read_text()
    assert "TRACEPOINT_PROBE(skb, kfree_skb)" in text
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["netlab"]
    assert any(fnmatch("observe/bpf/trace.c", p) for p in patterns), patterns


def test_every_tracepoint_has_a_probe_in_trace_c() -> None:
    """TRACEPOINTS (what can_run() checks) is exactly what trace.c hooks; the two
    packet hooks are raw tracepoints, named without their group."""
    src = program.source()
    hooked = {f"{g}/{n}" for g, n in re.findall(r"\bTRACEPOINT_PROBE\((\w+),\s*(\w+)\)", src)}
    raw = set(re.findall(r"\bRAW_TRACEPOINT_PROBE\((\w+)\)", src))
    assert {tp for tp in program.TRACEPOINTS if tp.split("/")[1] not in raw} == hooked
    assert len(hooked) + len(raw) == len(program.TRACEPOINTS)


def test_raw_event_mirrors_struct_event_t() -> None:
    """Same member names in the same order as trace.c's struct event_t."""
    body = re.search(r"struct event_t \{(.*?)\n\};", program.source(), re.S)
    assert body is not None
    members = re.findall(r"(\w+)(?:\[\d+\])?;", body.group(1))
    assert members == [name for name, _ in RawEvent._fields_]
    assert RECORD_SIZE % 8 == 0


def test_cflags_carry_offsets_and_ring_size() -> None:
    flags = program.cflags({"OFF_SKB_LEN": 112})
    assert "-DOFF_SKB_LEN=112" in flags
    assert f"-DRINGBUF_PAGES={program.RINGBUF_PAGES}" in flags


KFREE_FORMAT = '''name: kfree_skb
format:
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:32;\tsize:4;\tsigned:0;

print fmt: "skbaddr=%p reason=%s", REC->skbaddr, __print_symbolic(REC->reason, \
{ 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 120, "QUEUE_PURGE" })
'''


def _fake_tracefs(tmp_path: Path) -> Path:
    for tp in program.TRACEPOINTS:
        d = tmp_path / "events" / tp
        d.mkdir(parents=True)
        fmt = KFREE_FORMAT if tp == "skb/kfree_skb" else "format:\n"
        if tp == "tcp/tcp_send_reset":
            fmt = "format:\n\tfield:enum sk_rst_reason reason;\toffset:8;\tsize:4;\n"
        (d / "format").write_text(fmt)
    return tmp_path


def test_drop_reasons_and_enum_preamble_from_format_files(tmp_path: Path) -> None:
    root = str(_fake_tracefs(tmp_path))
    assert tracefs.mounted(root)
    assert tracefs.missing_tracepoints(program.TRACEPOINTS, root) == []
    assert tracefs.missing_tracepoints(["net/nope"], root) == ["net/nope"]
    assert tracefs.drop_reasons(root) == {2: "NOT_SPECIFIED", 3: "NO_SOCKET",
                                          120: "QUEUE_PURGE"}
    build = tmp_path / "modules"
    (build / "build/include/net").mkdir(parents=True)
    (build / "build/include/net/dropreason.h").write_text("")
    pre = tracefs.enum_preamble(program.TRACEPOINTS, root, build=build)
    assert pre.splitlines() == [
        "#include <net/dropreason.h>",
        "enum sk_rst_reason { __netlab_sk_rst_reason_placeholder = 0 };"]


def test_tcp_flags_in_tcpdump_order() -> None:
    assert tcp_flags(0x12) == "SA"
    assert tcp_flags(0x11) == "FA"
    assert tcp_flags(0) == "."


def _record(**fields: object) -> bytes:
    raw = RawEvent()
    for k, v in fields.items():
        setattr(raw, k, v)
    return bytes(raw)


def test_ring_chunk_split_and_decoded() -> None:
    """Two records as the ring holds them (8-byte header each) become two Events."""
    addr = struct.unpack("<I", socket.inet_aton("10.0.0.1"))[0]
    drop = _record(ts=5, kind=3, netns=77, reason=3, proto=6, has_tuple=1, saddr=addr,
                   daddr=addr, sport=1234, dport=80, tcp_flags=0x02, dev_from=1,
                   ifindex=2, ifname=b"eth0", location=0xffff0001)
    state = _record(ts=6, kind=7, netns=78, oldstate=2, newstate=1)
    step = stride(RECORD_SIZE)
    chunk = b"".join(struct.pack("<II", RECORD_SIZE, 0) + r + b"\0" * (step - RB_HDR - len(r))
                     for r in (drop, state))
    assert list(split_records(chunk, RECORD_SIZE)) == [drop, state]
    assert count_records(deque([chunk]), RECORD_SIZE) == 2

    dec = Decoder(reasons={3: "NO_SOCKET"}, ifnames={("pod", 2): "eth0@if9"},
                  inode_to_name={77: "pod"}, ksym=lambda a: f"sym+{a:#x}")
    ev, st = (dec.record(r) for r in split_records(chunk, RECORD_SIZE))
    assert (ev.kind, ev.netns, ev.ifname, ev.reason) == ("drop", "pod", "eth0@if9", "NO_SOCKET")
    assert (ev.saddr, ev.sport, ev.dport, ev.tcp_flags) == ("10.0.0.1", 1234, 80, "S")
    assert ev.extra["location"] == "sym+0xffff0001"
    assert (st.kind, st.netns, st.extra) == ("sock_state", None,
                                             {"oldstate": "SYN_SENT", "newstate": "ESTABLISHED"})
    assert ctypes.sizeof(RawEvent) == len(drop)


def _ring_fd(size: int) -> int:
    """A file laid out like a BPF ring buffer map (consumer page, producer page, data
    area), for RingReader; the data area is not mapped twice, so nothing here wraps."""
    import os

    fd = os.memfd_create("netlab-ring-test")
    os.ftruncate(fd, 2 * mmap.PAGESIZE + 2 * size)
    return fd


def _produce(fd: int, prod: int, *records: bytes) -> int:
    """Write committed records at producer position prod, as the kernel would; the new
    producer position."""
    import os

    step = stride(RECORD_SIZE)
    for r in records:
        os.pwrite(fd, struct.pack("<II", RECORD_SIZE, 0) + r, 2 * mmap.PAGESIZE + prod)
        prod += step
    os.pwrite(fd, struct.pack("<Q", prod), mmap.PAGESIZE)
    return prod


def test_ring_skip_drops_what_an_earlier_trace_left() -> None:
    """A borrowed program's ring (loaded.py) may hold an earlier trace's records: skip()
    hands them back unread, and only records written after it are read."""
    import os

    from netlab.observe.bpf.ring import RingReader

    fd = _ring_fd(mmap.PAGESIZE)
    try:
        prod = _produce(fd, 0, _record(ts=1, kind=7), _record(ts=2, kind=7))
        reader = RingReader(fd, mmap.PAGESIZE, RECORD_SIZE)
        try:
            reader.skip()
            assert struct.unpack("<Q", os.pread(fd, 8, 0))[0] == prod  # space handed back
            _produce(fd, prod, _record(ts=3, kind=7))
            out: deque[bytes] = deque()
            assert reader.read(out) == 1
            assert [RawEvent.from_buffer_copy(r).ts
                    for r in split_records(b"".join(out), RECORD_SIZE)] == [3]
        finally:
            reader.close()
    finally:
        os.close(fd)


def test_flush_drops_records_stamped_before_the_trace_started() -> None:
    """A record reserved by an earlier trace but committed after this one skipped the
    ring is older than this trace's floor: flush() drops it."""
    from netlab.observe.bpf.collector import BpfCollector

    col = BpfCollector()
    col._floor_ns = 100
    step = stride(RECORD_SIZE)
    col._raw.append(b"".join(struct.pack("<II", RECORD_SIZE, 0) + r
                             + b"\0" * (step - RB_HDR - len(r))
                             for r in (_record(ts=99, kind=7), _record(ts=100, kind=7))))
    assert [e.ts_ns for e in col.flush()] == [100]
