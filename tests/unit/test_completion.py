"""Shell completion: bash itself completes commands through the script netlab prints,
and lab and pod names come from the lab records."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.shell_completion import ShellComplete

from netlab.cli import completion
from netlab.cli.app import main
from netlab.kernel.ownership import LabRecord
from tests.conftest import NETLAB

SUMMARY = {"pods": [{"namespace": "bookinfo", "name": "sleep-0"}, {"namespace": "bookinfo", "name": "ratings-0"},
                    {"namespace": "outside", "name": "sleep-0"}]}


def test_bash_completes_commands_with_the_printed_script(tmp_path: Path) -> None:
    script = subprocess.run([NETLAB, "completion", "bash"], capture_output=True, text=True, check=True).stdout
    (tmp_path / "netlab.bash").write_text(script)
    probe = f"""
source {tmp_path / 'netlab.bash'}
COMP_WORDS=(netlab ztun); COMP_CWORD=1
_netlab_completion netlab
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {**os.environ, "PATH": f"{Path(NETLAB).parent}:{os.environ['PATH']}"}
    res = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert res.stdout.split() == ["ztunnel-config"], res.stderr


def _complete(args: list[str], incomplete: str) -> list[str]:
    return [c.value for c in ShellComplete(main, {}, "netlab", "_NETLAB_COMPLETE").get_completions(args, incomplete)]


@pytest.fixture
def two_labs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(completion, "all_labs", lambda: ["demo", "other"])
    record = LabRecord(lab="demo", status="ready", builder_pid=0, created=0.0, summary=SUMMARY)
    monkeypatch.setattr(LabRecord, "load", classmethod(lambda cls, lab: record if lab == "demo" else None))


def test_lab_names_complete_wherever_a_command_takes_a_lab(two_labs: None) -> None:
    assert _complete(["status"], "d") == ["demo"]
    assert _complete(["ztunnel-config"], "") == ["demo", "other"]
    assert _complete(["down"], "o") == ["other"]


def test_pod_names_complete_as_exec_and_trace_take_them(two_labs: None) -> None:
    assert _complete(["exec", "demo"], "book") == ["bookinfo/sleep-0", "bookinfo/ratings-0"]
    # `sleep-0` is in two namespaces, so only its ns/name forms are offered; ratings-0 is unique.
    assert _complete(["exec", "demo"], "") == ["bookinfo/sleep-0", "bookinfo/ratings-0", "outside/sleep-0",
                                               "ratings-0"]
    assert _complete(["trace", "demo", "--pod"], "out") == ["outside/sleep-0"]
