"""The BPF collector: tracepoints on the packet path, filtered in the kernel to the lab.

One folder per collector with its BPF source beside it (Retis' layout):

- trace.c      the program (package data, loaded by program.py)
- program.py   its tracepoints, its source, its compiler flags
- btf.py       a minimal BTF reader: member offsets of the *running* kernel, because
               the installed headers (Debian 6.1) describe another one (6.18)
- offsets.py   which members trace.c reads, as -D macros
- tracefs.py   tracefs mounting, drop-reason names and enum declarations read from
               the running kernel's format files
- ring.py      the ring buffer consumer (mmap, chunked copies, no per-record call)
- decode.py    struct event_t and its decoding into Events, off the packet path
- collector.py BpfCollector: the lifecycle that ties them together
"""

from __future__ import annotations

from netlab.observe.bpf.collector import BpfCollector
from netlab.observe.bpf.tracefs import TRACEFS

__all__ = ["BpfCollector", "TRACEFS"]
