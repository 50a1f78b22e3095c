"""One compiled, attached trace.c per process, lent to one BpfCollector at a time.

Why: compiling trace.c with bcc (clang, in-process) costs ~0.6 s and detaching its
seven tracepoints another ~0.4 s (the kernel waits out a grace period per hook), and a
lab run traces once per variant: seven variants paid ~7 s for the same program. The
program does not depend on the trace: everything a trace chooses (netns inodes, ports,
addresses, all_segments) lives in maps. So the first trace compiles and attaches it,
and later traces in the same process borrow it.

Why that is safe:
- Between traces the scope maps are empty: `netns_allow` has no entry, so every hook
  returns before reserving a ring slot and nothing is emitted (trace.c checks the
  netns before `reserve_event`/`emit` on every path). The idle cost is the early
  return on SYN/FIN/RST and drops only.
- Nothing of one trace reaches the next (`Lease`): the lender empties the scope maps
  when a trace ends; the next trace first moves the ring's consumer to its producer
  (dropping anything left), then notes a time floor, then fills the maps; records
  stamped before the floor are dropped as they are read (the collector's flush).
  The kernel's counters (lost, purged) are read as a difference from the lease's
  start.
- One trace at a time: a second concurrent collector gets a private program, compiled
  for it and unloaded when it stops (the behaviour before this module).
- Nothing outlives the process: bcc registers the object's cleanup with atexit, and
  the kernel drops the hooks when the process's file descriptors close anyway.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Lease:
    """A program lent to one collector. `shared`: the process's cached program (keep
    it loaded at the end) rather than a private one (unload it)."""
    bpf: Any
    shared: bool
    ports: set[int] = field(default_factory=set)  # port_allow slots set, to zero again


class ProgramCache:
    """Holds at most one loaded program, keyed by its source and flags."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bpf: Any = None
        self._key: tuple[bytes, tuple[str, ...]] | None = None
        self._busy = False

    def acquire(self, text: bytes, cflags: list[str]) -> Lease:
        """The cached program if it is free and built from the same text and flags;
        otherwise a private one."""
        from bcc import BPF

        key = (text, tuple(cflags))
        with self._lock:
            if not self._busy and (self._bpf is None or self._key == key):
                if self._bpf is None:
                    self._bpf, self._key = BPF(text=text, cflags=list(cflags)), key
                self._busy = True
                return Lease(self._bpf, shared=True)
        return Lease(BPF(text=text, cflags=list(cflags)), shared=False)

    def load(self, text: bytes, cflags: list[str]) -> None:
        """Compile and attach the program now, unless one is loaded: e.g. in a thread
        while a lab builds. A trace that asks meanwhile waits for this one."""
        from bcc import BPF

        with self._lock:
            if self._bpf is None:
                self._bpf, self._key = BPF(text=text, cflags=list(cflags)), (text, tuple(cflags))

    def release(self, lease: Lease) -> None:
        """Empty the lease's scope (no more events), then lend the program again or,
        if private, unload it."""
        if not lease.shared:
            lease.bpf.cleanup()
            return
        try:
            clear_scope(lease)
        except BaseException:
            # A program whose scope cannot be emptied must not be lent again.
            with self._lock:
                self._bpf, self._key, self._busy = None, None, False
            lease.bpf.cleanup()
            raise
        with self._lock:
            self._busy = False


def clear_scope(lease: Lease) -> None:
    """Remove every filter entry a trace set: the netns first, which alone stops all
    output."""
    import ctypes

    b = lease.bpf
    b[b"netns_allow"].clear()
    ports = b[b"port_allow"]
    for p in lease.ports:
        ports[ctypes.c_int(p)] = ctypes.c_uint8(0)
    lease.ports.clear()
    b[b"addr_allow"].clear()


PROGRAMS = ProgramCache()
