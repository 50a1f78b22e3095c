"""tracefs: where the tracepoints' format files are, and what they say at run time.

Why read them at run time: drop-reason numbers change between kernels, and the
installed headers may predate the running kernel, so the names of the drop reasons
and the enums a tracepoint's fields use are taken from the running kernel's own
format files, not from headers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
from pathlib import Path
from typing import Iterable

TRACEFS = "/sys/kernel/tracing"

# Headers that define an enum a hooked tracepoint's fields use; see enum_preamble().
ENUM_HEADERS = {"skb_drop_reason": "net/dropreason.h", "sk_rst_reason": "net/rstreason.h"}

_MOUNT_WHY = {
    errno.EPERM: "needs CAP_SYS_ADMIN: run as root",
    errno.ENODEV: "the kernel has no tracefs (CONFIG_TRACING off)",
    errno.ENOENT: "the mount point does not exist (is sysfs mounted on /sys?)",
}


def mounted(tracefs: str = TRACEFS) -> bool:
    """tracefs is usable at `tracefs` (its events/ directory is there)."""
    return os.path.isdir(os.path.join(tracefs, "events"))


def mount_tracefs(tracefs: str = TRACEFS) -> None:
    """mount -t tracefs nodev `tracefs`, through mount(2) so no shell or mount(8)
    is involved and the kernel's own error says why it failed (OSError)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_void_p)
    if libc.mount(b"nodev", os.fsencode(tracefs), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), tracefs)


def ensure_tracefs(tracefs: str = TRACEFS) -> str | None:
    """Mount tracefs when it is not there yet; None when usable, else why not."""
    if mounted(tracefs):
        return None
    try:
        mount_tracefs(tracefs)
    except OSError as e:
        why = _MOUNT_WHY.get(e.errno or 0, e.strerror)
        return (f"tracefs is not mounted at {tracefs} and mounting it failed: {why} "
                f"(try: mount -t tracefs nodev {tracefs})")
    if not mounted(tracefs):
        return f"tracefs mounted at {tracefs} but it has no events/ directory"
    return None


def missing_tracepoints(tracepoints: Iterable[str], tracefs: str = TRACEFS) -> list[str]:
    """The "group/name" tracepoints this kernel does not have."""
    return [tp for tp in tracepoints
            if not os.path.exists(os.path.join(tracefs, "events", tp, "format"))]


def drop_reasons(tracefs: str = TRACEFS) -> dict[int, str]:
    """Number -> name from kfree_skb's `__print_symbolic(REC->reason, ...)`."""
    fmt = Path(tracefs, "events/skb/kfree_skb/format").read_text()
    at = fmt.find("__print_symbolic(REC->reason")
    if at < 0:
        return {}
    return {int(n): name for n, name in re.findall(r'\{\s*(\d+)\s*,\s*"(\w+)"\s*\}', fmt[at:])}


def enum_preamble(tracepoints: Iterable[str], tracefs: str = TRACEFS,
                  build: Path | None = None) -> str:
    """Declare every `enum X` the tracepoints use, so bcc can build its args structs.

    The headers may predate the running kernel (6.1 headers lack enum sk_rst_reason).
    A real header is included when it exists under `build` (the running kernel's
    /lib/modules/<release>); otherwise a 4-byte placeholder enum is declared:
    trace.c only copies these fields as integers.
    """
    if build is None:
        build = Path(f"/lib/modules/{os.uname().release}")
    lines = []
    seen: set[str] = set()
    for tp in tracepoints:
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
