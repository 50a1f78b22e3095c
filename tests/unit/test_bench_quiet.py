"""bench/quiet.py: when a timed build may start (the arithmetic; /proc/stat's format)."""

from __future__ import annotations

import pytest

from netlab.bench import quiet

STAT = ("cpu  100 5 50 800 40 3 2 0 7 0\n"  # user nice system idle iowait irq softirq steal guest guest_nice
        "cpu0 50 2 25 400 20 1 1 0 0 0\n")


def test_cpu_times_count_iowait_as_idle_and_guest_inside_user() -> None:
    assert quiet.cpu_times(STAT) == (100 + 5 + 50 + 800 + 40 + 3 + 2 + 0, 800 + 40)


def test_cpu_times_refuse_what_is_not_proc_stat() -> None:
    with pytest.raises(ValueError):
        quiet.cpu_times("intr 1 2 3\n")


def test_idle_share_of_a_window() -> None:
    assert quiet.idle_share((1000, 500), (1100, 590)) == pytest.approx(0.9)
    assert quiet.idle_share((1000, 500), (1000, 500)) == 1.0  # no tick: nothing ran


@pytest.mark.parametrize("idle, baseline, ok", [
    (0.95, 0.99, True),   # 90% idle is always enough
    (0.50, 0.99, False),  # the kernel still freeing the last lab
    (0.55, 0.60, True),   # a machine that was half busy before the bench: within the margin
    (0.45, 0.60, False),
])
def test_settled_against_the_baseline(idle: float, baseline: float, ok: bool) -> None:
    assert quiet.settled(idle, baseline) is ok


def test_this_machines_proc_stat_parses() -> None:
    with open("/proc/stat") as f:
        total, idle = quiet.cpu_times(f.read())
    assert 0 < idle <= total
