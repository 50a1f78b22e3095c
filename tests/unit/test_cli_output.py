"""What the command line prints when its output is not a terminal: nothing is wrapped.

Run as a real process with stdout and stderr on pipes, as in CI or `| grep`."""

from __future__ import annotations

import subprocess

from tests.conftest import NETLAB


def test_a_long_error_stays_on_one_line_off_a_tty(tmp_path) -> None:
    missing = tmp_path / ("a-rather-long-directory-name-" * 5) / "topology.yaml"
    res = subprocess.run([NETLAB, "up", str(missing)], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"})
    assert res.returncode == 2, res.stderr
    first = res.stderr.splitlines()[0]
    assert len(first) > 160 and str(missing) in first, res.stderr


def test_tables_are_not_squeezed_off_a_tty() -> None:
    res = subprocess.run([NETLAB, "doctor"], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"})
    rows = [line for line in res.stdout.splitlines() if line.startswith("│")]
    # One row per check: no cell spilled onto a second line.
    checks = [line.split("│")[1].strip() for line in rows]
    assert all(checks), res.stdout
    assert len(set(checks)) == len(checks)
