"""Memory of a lab's processes: PSS from /proc/<pid>/smaps_rollup.

Why PSS (proportional set size) and not RSS: processes forked from a pre-imported
interpreter (kernel/zygote.py) share most of their pages, and RSS would count each
shared page once per process; PSS divides every page among the processes that map it,
so the PSS of all processes adds up to the memory the lab really uses (less the
zygotes' own share, 1/(children + 1) of what they share, while they live).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


def parse_pss_kib(smaps_rollup: str) -> int:
    """The `Pss:` line of a smaps_rollup text, in KiB (the kernel writes `Pss:  1234 kB`)."""
    for line in smaps_rollup.splitlines():
        if line.startswith("Pss:"):
            fields = line.split()
            if len(fields) < 2 or not fields[1].isdigit():
                break
            return int(fields[1])
    raise ValueError("no Pss line in smaps_rollup")


def pss_kib(pid: int) -> int | None:
    """PSS of one process in KiB; None when it is gone (or is a kernel thread)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return parse_pss_kib(f.read())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class MemoryFigures:
    processes: int
    total_kib: int
    per_pod_kib: float  # total over every pod of the lab
    servers: int
    server_kib: int  # the echo servers' own processes
    per_server_kib: float

    def as_dict(self) -> dict[str, float]:
        return {"processes": self.processes, "total_mib": self.total_kib / 1024,
                "per_pod_mib": self.per_pod_kib / 1024, "servers": self.servers,
                "server_mib": self.server_kib / 1024, "per_server_mib": self.per_server_kib / 1024}


def figures(all_pss: Iterable[int], server_pss: Iterable[int], pods: int) -> MemoryFigures:
    """Totals and shares: per pod over all lab processes, per server over the servers' own."""
    everything = list(all_pss)
    servers = list(server_pss)
    total, server_total = sum(everything), sum(servers)
    return MemoryFigures(len(everything), total, total / pods if pods else 0.0, len(servers),
                         server_total, server_total / len(servers) if servers else 0.0)
