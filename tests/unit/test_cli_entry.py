"""The console script's first moments and its last-resort guard, seen from outside.

Run as a real process, the way a user meets them: exit codes and stderr.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import NETLAB

BOOM = """
import sys
import click
from netlab.cli import app

@click.command("boom")
def boom() -> None:
    raise RuntimeError("kaput\\nsecond line")

app.main.add_command(boom)
sys.argv = ["netlab", "boom"]
from netlab.cli.entry import main
main()
"""


def test_an_unexpected_exception_is_one_line_exit_70_and_a_file(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", BOOM], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 70, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("internal error: RuntimeError: kaput (details in "), lines[0]
    path = lines[0].rsplit("(details in ", 1)[1].rstrip(")")
    try:
        text = Path(path).read_text()
        assert "Traceback" in text and "kaput" in text and "netlab boom" in text
    finally:
        os.unlink(path)


def _handlers_installed(pid: int) -> bool:
    """Our entry catches SIGTERM (Python alone does not): the entry has taken over."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # already gone
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_ctrl_c_while_importing_prints_no_traceback() -> None:
    """From the moment the entry runs until the command ends, Ctrl-C never shows a traceback.

    The interpreter's own start (before `netlab.cli.main` runs, ~20 ms) is not ours."""
    rng = random.Random(14)
    outcomes = set()
    for _ in range(12):
        proc = subprocess.Popen([NETLAB, "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not _handlers_installed(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert "Traceback" not in err, err
        # -SIGINT: it landed while the interpreter was shutting down (handlers reset): no output
        assert proc.returncode in (0, 130, -signal.SIGINT), (proc.returncode, err)
        outcomes.add(proc.returncode)
    assert 130 in outcomes, "no signal landed during the imports: the test did not test them"


def test_ctrl_c_while_click_parses_is_130_not_clicks_aborted() -> None:
    """An eager option (`--version`) runs while click parses, outside any command; click
    itself would print "Aborted!" and exit 1 for a Ctrl-C there."""
    import click

    from netlab.cli.app import NetlabGroup

    def boom(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            raise KeyboardInterrupt

    group = NetlabGroup(params=[click.Option(["--boom"], is_flag=True, is_eager=True, callback=boom)])
    with pytest.raises(SystemExit) as exited:
        group.main(["--boom"], prog_name="netlab")
    assert exited.value.code == 130
