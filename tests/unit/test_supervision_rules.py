"""The supervisor's back-off and the lab state `status` and `list` share, as plain data.

Back-off is the kubelet's (kuberuntime_manager.go doBackOff; the pod-lifecycle docs):
first exit restarted at once, then 10 s doubling to 5 min, reset after 10 minutes of
running. The lab state is one function for both commands.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from netlab.kernel import query
from netlab.kernel.ownership import LabRecord, ProcessRecord, Supervised, write_supervision
from netlab.kernel.supervisor import BACKOFF_RESET, describe_exit, next_delay
from netlab.plan import naming


def test_backoff_is_the_kubelets() -> None:
    waits, backoff = [], 0.0
    for _ in range(8):
        wait, backoff = next_delay(backoff, ran_for=1.0)
        waits.append(wait)
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300]
    assert next_delay(300.0, ran_for=BACKOFF_RESET) == (0.0, 10.0)


def test_exit_descriptions() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(None).startswith("exited")


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabRecord:
    monkeypatch.setattr(naming, "STATE_ROOT", str(tmp_path))
    me = ProcessRecord("app/default/web-0/web", os.getpid(), _starttime(os.getpid()), "nl-x-pod", "/dev/null")
    sup = ProcessRecord("supervisor", os.getpid(), _starttime(os.getpid()), "nl-x-fabric", "/dev/null")
    rec = LabRecord(lab="x", status="ready", builder_pid=0, created=time.time(), processes=[me, sup])
    rec.save()
    return rec


def _starttime(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])


def _supervised(rec: LabRecord, state: str, pid: int | None = None) -> None:
    p = rec.processes[0]
    write_supervision(rec.lab, {p.name: Supervised(pid or p.pid, p.starttime if pid is None else 1, 0, state,
                                                   time.time())})


def _list_state() -> str:
    return next(r["status"] for r in query.list_labs() if r["name"] == "x")


def test_ready_degraded_and_crashed_are_told_alike(record: LabRecord) -> None:
    _supervised(record, "running")
    rec = LabRecord.load("x")
    assert query.lab_state(rec) == _list_state() == query.status(rec)["status"] == "ready"
    _supervised(record, "down")
    rec = LabRecord.load("x")
    assert query.lab_state(rec) == _list_state() == query.status(rec)["status"] == "degraded"
    # The supervisor says running, but the pid is gone: down now, not when it notices.
    _supervised(record, "running", pid=2 ** 22 + 1)
    rec = LabRecord.load("x")
    assert query.status(rec)["status"] == _list_state() == "degraded"
    # A builder that died mid-build: crashed, in both.
    rec.status, rec.builder_pid = "building", 2 ** 22 + 1
    rec.save()
    rec = LabRecord.load("x")
    assert query.lab_state(rec) == _list_state() == query.status(rec)["status"] == "crashed"
