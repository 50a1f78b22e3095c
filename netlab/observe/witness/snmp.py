"""A netns' SNMP and netstat counters, and what changed between two readings.

Where the kernel discards a packet without freeing it with a reason (a listener that
cannot route its SYN-ACK *consumes* the SYN), the counters are its only record:
`TcpExtListenDrops`, `IpOutNoRoutes`, `TcpOutRsts`, … Names are nstat's: the file's
prefix plus the field (`TcpExt` + `ListenDrops`).
"""

from __future__ import annotations

from typing import Iterable

from netlab.kernel import netns as nsmod

FILES = ("/proc/thread-self/net/snmp", "/proc/thread-self/net/netstat")


def parse(text: str) -> dict[str, int]:
    """/proc/net/snmp-shaped text (header line, value line, per prefix) → counters."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        prefix = head.split(":")[0]
        for k, v in zip(head.split()[1:], vals.split()[1:]):
            try:
                out[prefix + k] = int(v)
            except ValueError:
                pass
    return out


def counters(netns: str) -> dict[str, int]:
    """Every counter of /proc/net/{snmp,netstat} as seen inside `netns`."""
    texts = []
    with nsmod.entered(netns):
        for path in FILES:
            with open(path) as f:
                texts.append(f.read())
    out: dict[str, int] = {}
    for text in texts:
        out.update(parse(text))
    return out


def delta(before: dict[str, int], after: dict[str, int],
          names: Iterable[str] | None = None) -> dict[str, int]:
    """after − before for `names` (default: every counter that changed)."""
    keys = list(names) if names is not None else sorted(
        k for k in after.keys() | before.keys() if after.get(k, 0) != before.get(k, 0))
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}
