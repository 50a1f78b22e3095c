"""A lab's life: build it from a model (rolling back on any failure), remove it, clean up.

`up(lab)` takes a `model.Lab`, never files: the command line parses files with
`netlab.topology.load`, while labs, benches and tests build or vary a model
(`dataclasses.replace`) and hand it here. So every caller builds a lab the same way,
and a bad file is rejected before anything touches the kernel.

Rollback is the promise of `up`: Ctrl-C, SIGTERM or any error during the build removes
everything built so far (the record is a journal written before each object is made,
so `destroy` knows what may exist), and only then does the error reach the caller.
Signals are recorded, never raised from their handler (netlab.kernel.interrupts): they
take effect between build steps, and a last check after the lab is marked ready means
a signal at any moment before `up` returns leaves either nothing or everything removed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from netlab.errors import LabNotFound, NetlabError
from netlab.kernel import netns as nsmod
from netlab.kernel import interrupts
from netlab.kernel.apply import Applier, Progress, destroy
from netlab.kernel.ownership import LabRecord, all_labs
from netlab.kernel.query import crashed, lab_state, summarize
from netlab.model import Lab
from netlab.plan import naming
from netlab.plan.planner import PlanOptions, plan

__all__ = ["UpResult", "Progress", "up", "down", "clean", "require_root", "sigterm_as_interrupt"]


@dataclass
class UpResult:
    lab: str
    seconds: float  # from planning to every process ready
    summary: dict[str, Any]  # the `status --json` shape


def require_root() -> None:
    if os.geteuid() != 0:
        raise NetlabError("netlab builds network namespaces and needs root: run it with sudo")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM rolls back just like Ctrl-C does: `kill` and a CI timeout leave nothing behind."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def up(lab: Lab, progress: Progress | None = None) -> UpResult:
    """Plan and build `lab`; on any failure or interrupt remove what was built, then raise.

    A SIGINT or SIGTERM raises `interrupts.Interrupted` (a KeyboardInterrupt) once the
    rollback is done; if it came before anything was built, nothing is rolled back.
    """
    require_root()
    if not naming.valid_lab_name(lab.name):
        # Names end up in netns and interface-adjacent names: the kernel's limits apply.
        raise NetlabError(f"{lab.name!r} is not a valid lab name: use a lowercase letter, "
                          "then up to 19 lowercase letters, digits or '-'")
    with interrupts.deferred() as guard:
        started = time.perf_counter()
        state = plan(lab, PlanOptions(python=sys.executable))  # pure: a bad model builds nothing
        _refuse_clashes(lab.name, [n.name for n in state.netns])
        guard.check()  # last moment at which nothing was built
        record = LabRecord.new(lab.name, [_source(f) for f in lab.files])
        record.summary = summarize(state, lab)
        try:
            record.save()
            Applier(record, progress or _quiet, guard).apply(state)
            record.status = "ready"
            record.save()
            guard.check()  # a signal up to here undoes the build; after it, `up` has returned
        except BaseException as e:
            destroy(record)  # signals stay recorded, so nothing interrupts the rollback
            if guard.received is not None and not isinstance(e, interrupts.Interrupted):
                # The signal also reached a helper (Ctrl-C goes to the whole process
                # group, e.g. iptables-restore): report the interrupt, not its side effect.
                raise interrupts.Interrupted(guard.received) from e
            raise
    return UpResult(lab.name, time.perf_counter() - started, record.summary)


def down(lab: str) -> float:
    """Remove everything `lab` owns; returns the seconds it took."""
    require_root()
    record = LabRecord.load(lab)
    if record is None:
        raise LabNotFound(f"no lab named {lab!r}; `netlab list` shows the labs on this machine")
    if record.status == "building" and record.builder_pid_alive():
        raise NetlabError(f"lab {lab!r} is still being built by pid {record.builder_pid}; "
                          "interrupt that `netlab up` (it rolls back) instead")
    started = time.perf_counter()
    destroy(record)
    return time.perf_counter() - started


def clean(lab: str | None = None, everything: bool = False) -> list[str]:
    """Remove crashed labs (a builder that died mid-build): `lab` only, when named.

    `everything` also removes labs that are running fine. Naming a lab that did not
    crash (and not `everything`) is refused: `down` is how a working lab is removed.
    """
    require_root()
    if lab is not None:
        record = LabRecord.load(lab)
        if record is None:
            raise LabNotFound(f"no lab named {lab!r}; `netlab list` shows the labs on this machine")
        if not (everything or crashed(record)):
            raise NetlabError(f"lab {lab!r} has not crashed (it is {lab_state(record)}); "
                              f"remove it with `netlab down {lab}`, or use `netlab clean --all {lab}`")
        destroy(record)
        return [lab]
    removed = []
    for name in all_labs():
        record = LabRecord.load(name)
        if record is None:
            continue
        if everything or crashed(record):
            destroy(record)
            removed.append(name)
    return removed


def _refuse_clashes(name: str, netns: list[str]) -> None:
    """Never adopt or overwrite what someone else (another lab, or not netlab) owns."""
    existing = LabRecord.load(name)
    if existing is not None:
        hint = (f"it is still being built by pid {existing.builder_pid}"
                if existing.status == "building" and existing.builder_pid_alive()
                else f"remove it first with `netlab down {name}`")
        raise NetlabError(f"a lab named {name!r} already exists ({existing.status}); {hint}, "
                          "or pick another name with --name")
    clash = [n for n in netns if nsmod.exists(n)]
    if clash:
        raise NetlabError(f"network namespace {clash[0]} exists but no lab {name!r} owns it; "
                          "netlab will not touch it. Remove it yourself or use another --name")


def _source(file: str) -> str:
    """Record real files by absolute path (so `list` is clear from any directory); a
    model built in code names its origin in words (e.g. `<bench>`), kept as is."""
    return os.path.abspath(file) if os.path.exists(file) else file


def _quiet(step: str, done: int, total: int) -> None:
    pass
