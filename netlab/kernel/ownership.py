"""The lab's ownership record: /run/netlab/<lab>/state.json.

Written *before* each kernel object is made (a journal of intent), so a crash at any
point leaves a record naming everything that might exist. Teardown removes exactly
what the record names and never sweeps by pattern (the lesson of Mininet's `mn -c`).
/run is tmpfs: after a reboot both the record and the namespaces are gone together.

Once the lab is up, its supervisor (kernel/supervisor.py) restarts processes that die
and keeps what is true now in a file of its own, `supervisor.json` (it is that
file's only writer, so no lock is needed). `LabRecord.load` lays it over the record:
a restarted process is known by its new pid everywhere (status, logs, teardown).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from netlab.plan import naming

Status = Literal["building", "ready", "failed", "destroying"]
SUPERVISOR = "supervisor"  # the process name of a lab's supervisor in its record
SUPERVISION_FILE = "supervisor.json"


@dataclass
class ProcessRecord:
    name: str
    pid: int
    starttime: int  # /proc/<pid>/stat field 22: guards against pid reuse
    netns: str
    log: str
    restarts: int = 0  # by the supervisor, since `up`
    state: str = "running"  # the supervisor's word: running | starting | down


@dataclass
class Supervised:
    """One process as its supervisor last wrote it down."""

    pid: int
    starttime: int
    restarts: int
    state: str  # running | starting | down
    since: float  # when it entered that state
    last_exit: str | None = None  # "killed by SIGKILL", "exit code 1"
    next_start: float | None = None  # while down: when the next start is due (back-off)


def read_supervision(lab: str) -> dict[str, Supervised]:
    """The supervisor's view, process name -> Supervised; empty when it has written none."""
    try:
        with open(os.path.join(naming.state_dir(lab), SUPERVISION_FILE)) as f:
            raw = json.load(f)
        return {name: Supervised(**p) for name, p in raw["processes"].items()}
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return {}


def write_supervision(lab: str, procs: dict[str, Supervised]) -> None:
    path = os.path.join(naming.state_dir(lab), SUPERVISION_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump({"processes": {n: asdict(p) for n, p in procs.items()}}, f, indent=1)
    os.replace(path + ".tmp", path)


@dataclass
class LabRecord:
    lab: str
    status: Status
    builder_pid: int
    created: float
    files: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def dir(self) -> str:
        return naming.state_dir(self.lab)

    def save(self) -> None:
        """Write the whole record atomically (tmp file, then rename).

        Encoded in one `json.dumps` call without indentation, which CPython does in C:
        `asdict` deep-copies the summary, and `json.dump` or any `indent` use the pure-Python
        encoder, which made a 200-pod `up` spend 6 s of 11 writing this file."""
        os.makedirs(self.dir, exist_ok=True)
        tmp = os.path.join(self.dir, "state.json.tmp")
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["processes"] = [asdict(p) for p in self.processes]
        text = json.dumps(d)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(self.dir, "state.json"))

    @classmethod
    def load(cls, lab: str) -> "LabRecord | None":
        path = os.path.join(naming.state_dir(lab), "state.json")
        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):
            # A torn record still marks ownership: rebuild what the names tell us.
            return cls(lab=lab, status="failed", builder_pid=0, created=0.0)
        d["processes"] = [ProcessRecord(**p) for p in d.get("processes", [])]
        record = cls(**d)
        record.overlay(read_supervision(lab))
        return record

    def overlay(self, supervised: dict[str, Supervised]) -> None:
        """Take the supervisor's newer facts: current pid, restarts, state."""
        for p in self.processes:
            now = supervised.get(p.name)
            if now is not None:
                p.pid, p.starttime, p.restarts, p.state = now.pid, now.starttime, now.restarts, now.state

    @classmethod
    def new(cls, lab: str, files: list[str]) -> "LabRecord":
        return cls(lab=lab, status="building", builder_pid=os.getpid(), created=time.time(),
                   files=list(files))

    def builder_pid_alive(self) -> bool:
        return pid_alive(self.builder_pid)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def all_labs() -> list[str]:
    try:
        return sorted(d for d in os.listdir(naming.STATE_ROOT)
                      if os.path.isdir(os.path.join(naming.STATE_ROOT, d)))
    except FileNotFoundError:
        return []


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def starttime(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(") ", 1)[1].split()[19])
