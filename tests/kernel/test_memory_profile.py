"""scripts/profile_echo_memory.py, the explanation behind the bench's memory figure.

Its page walk (pages a forked echo server maps alone, read from /proc/PID/pagemap by a
process that never forked from the zygote) must agree with the kernel's own count of
the child's private pages, and it must leave no namespace behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "profile_echo_memory.py"


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_the_page_walk_agrees_with_the_kernels_private_dirty() -> None:
    before = _namespaces()
    res = subprocess.run([sys.executable, str(SCRIPT), "--requests", "1"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    steps = re.findall(r"^\s*([a-z0-9 ]+): \+\s*(\d+) KiB", res.stdout, re.M)
    assert [s for s, _ in steps] == ["fork", "placed", "ready", "request 1"], res.stdout
    assert all(int(kib) > 0 for _, kib in steps), res.stdout  # each step writes shared pages
    total = re.search(r"total: (\d+) KiB owned; smaps_rollup Private_Dirty (\d+) KiB", res.stdout)
    assert total, res.stdout
    owned, dirty = int(total[1]), int(total[2])
    assert abs(owned - dirty) <= 0.05 * dirty, res.stdout
    assert "code" in res.stdout and "str" in res.stdout  # what lay on the copied pages
    assert _namespaces() == before
