"""Start each timed build once the machine has stopped working on the previous one.

Why: the kernel frees deleted network namespaces in the background (cleanup_net, on a
kworker, holding the rtnl lock in batches). After a 1,000-namespace teardown it kept one
of this machine's two CPUs busy for about a second, and a 50-pod lab built during that
second took 1.1-1.3 s instead of 0.45 s, 0.8 s of it in veth creation waiting on that
lock (measured 2026-11-30: `--curve` put 50 pods after 1,000 and read +163%). Each
figure should be the cost of its own build, not of the one before.

How: the share of CPU time spent idle, from /proc/stat, over short windows. It is
settled once a window is at least as idle as the machine was before the bench began
(less a margin, so a steady background load does not stall it), or at 90% idle,
whichever is lower; it gives up after a deadline and the build goes ahead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

WINDOW = 0.2  # seconds per sample
MARGIN = 0.10  # a window this much less idle than the baseline still counts as settled
ENOUGH = 0.90  # this idle always counts as settled
DEADLINE = 10.0  # seconds: a busy machine delays a build by at most this


def cpu_times(stat_text: str) -> tuple[int, int]:
    """(all, idle) jiffies from /proc/stat's first line; idle counts iowait too."""
    fields = stat_text.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        raise ValueError("not /proc/stat: its first line is the `cpu` total")
    values = [int(v) for v in fields[1:]]
    return sum(values[:8]), values[3] + values[4]  # user..steal; guest is inside user


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[0] - before[0]
    return 1.0 if total <= 0 else (after[1] - before[1]) / total


def settled(idle: float, baseline: float) -> bool:
    return idle >= min(ENOUGH, baseline - MARGIN)


def _sample(window: float) -> float:
    with open("/proc/stat") as f:
        before = cpu_times(f.read())
    time.sleep(window)  # a measuring window, not a wait for an event: there is none to wait on
    with open("/proc/stat") as f:
        return idle_share(before, cpu_times(f.read()))


@dataclass
class Quiet:
    baseline: float  # the idle share before the bench built anything

    @classmethod
    def measure(cls) -> "Quiet":
        return cls(_sample(WINDOW))

    def wait(self, deadline: float = DEADLINE) -> None:
        """Until a window is settled, or the deadline."""
        started = time.monotonic()
        while not settled(_sample(WINDOW), self.baseline):
            if time.monotonic() - started >= deadline:
                return
