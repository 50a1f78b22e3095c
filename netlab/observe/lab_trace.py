"""Trace a running lab: every namespace it owns, around a command run in one of its pods,
or for a while. What `netlab trace` does, without the printing.

Why it lives here and not in the command line: deciding the scope (the lab's netns by
inode), refusing a trace where no collector can run (an empty trace proves nothing),
and draining the collectors after the command are observation, and a lab or a test
wants the same result as data (`LabTrace`), not as text.
"""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from netlab.errors import NetlabError
from netlab.kernel import query
from netlab.kernel.processes import run_in
from netlab.observe import registry
from netlab.observe.events import Event
from netlab.observe.timeline import Timeline
from netlab.observe.tracer import Tracer

Say = Callable[[str], None]


@dataclass
class LabTrace:
    """What one trace saw. `command` is set when a command ran (its output captured)."""

    events: list[Event]
    timelines: list[Timeline]
    counters: dict[str, dict[str, int]]
    skipped: dict[str, str]  # collector -> why it did not run
    pod: dict[str, Any] | None = None
    argv: list[str] = field(default_factory=list)
    command: subprocess.CompletedProcess[bytes] | None = None


def unusable(names: Sequence[str]) -> dict[str, str]:
    """Why each of `names` cannot run here; raise if none can."""
    why = {n: cap.reason for n, cap in registry.probe_all(tuple(names)) if not cap.ok}
    if len(why) == len(names):
        detail = "; ".join(f"{n}: {r}" for n, r in why.items())
        raise NetlabError(f"no collector can run here ({detail}); `netlab doctor` explains")
    return why


def trace_lab(lab: str, *, pod: str | None = None, argv: Sequence[str] = (),
              port: int | None = None, pcap_dir: str | None = None,
              duration: float | None = None, collectors: Sequence[str] | None = None,
              say: Say = lambda msg: None) -> LabTrace:
    """Trace `lab` while `argv` runs in `pod` (both or neither); without a command, for
    `duration` seconds or until Ctrl-C (which ends the trace, not the caller)."""
    if argv and not pod:
        raise NetlabError("--pod is required with a command: netlab trace LAB --pod POD -- CMD")
    if pod and not argv:
        raise NetlabError("--pod names where `-- CMD` runs; give a command after --")
    names = tuple(collectors) if collectors is not None else registry.names()
    record = query.record_of(lab)
    target = query.find_pod(record, pod) if pod else None
    scope = query.netns_inodes(record)
    skipped = unusable(names)
    for name, reason in skipped.items():
        say(f"collector {name} skipped: {reason}")
    where = f"tracing {len(scope)} netns of {lab}{f' (port {port})' if port else ''}"
    result: subprocess.CompletedProcess[bytes] | None = None
    with Tracer(scope, port=port, collectors=names, pcap_dir=pcap_dir, strict=False) as tracer:
        if target is not None:
            say(f"{where} while running {' '.join(argv)!r} in {target['namespace']}/{target['name']}")
            try:
                result = run_in(target["netns"], list(argv), query.pod_resolv_conf(record, target),
                                capture_output=True)
            except FileNotFoundError:
                raise NetlabError(f"command not found: {argv[0]}") from None
        else:
            say(f"{where}; " + (f"for {duration:g}s" if duration else "Ctrl-C to stop"))
            try:
                threading.Event().wait(duration)  # None: until Ctrl-C
            except KeyboardInterrupt:
                say("stopping")
        tracer.drain()
    return LabTrace(tracer.events, tracer.timelines(), tracer.counters,
                    {**skipped, **tracer.skipped}, target, list(argv), result)
