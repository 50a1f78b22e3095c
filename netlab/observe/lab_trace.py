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
from netlab.observe.keylog import KeylogSwitch, decode_command
from netlab.observe.proxylog import LogWindow
from netlab.observe.story import LabView, Story, build_stories
from netlab.observe.timeline import Timeline
from netlab.observe.tracer import Tracer

Say = Callable[[str], None]


@dataclass
class LabTrace:
    """What one trace saw. `command` is set when a command ran (its output captured).

    `events` holds the packet events and the proxies' access-log events (source
    "proxy"); `timelines` are built from the packet events only; `stories` join them
    per user connection and `other` is every flow no story took."""

    events: list[Event]
    timelines: list[Timeline]
    counters: dict[str, dict[str, int]]
    skipped: dict[str, str]  # collector -> why it did not run
    pod: dict[str, Any] | None = None
    argv: list[str] = field(default_factory=list)
    command: subprocess.CompletedProcess[bytes] | None = None
    stories: list[Story] = field(default_factory=list)
    other: list[Timeline] = field(default_factory=list)
    lab: LabView = field(default_factory=LabView)
    keylog: str | None = None  # the TLS key log written beside the pcaps
    tshark: str | None = None  # the command that decodes HBONE with it


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
    logs = LogWindow({p.name: (p.log, p.netns) for p in record.processes}).start()
    switch = KeylogSwitch(record.dir, pcap_dir) if pcap_dir else None
    keylog = str(switch.start()) if switch else None
    try:
        tracer, result = _run(scope, port, names, pcap_dir, target, argv, duration, record,
                              where, say)
    finally:
        if switch:
            switch.stop()
    packets = tracer.events
    timelines = tracer.timelines()
    proxy = logs.events()
    view = LabView.from_summary(record.summary)
    stories, other = build_stories(timelines, proxy, view)
    return LabTrace(sorted(packets + proxy, key=lambda e: e.ts_ns), timelines, tracer.counters,
                    {**skipped, **tracer.skipped}, target, list(argv), result, stories, other,
                    view, keylog, decode_command(stories, keylog) if keylog else None)


def _run(scope: dict[str, int], port: int | None, names: tuple[str, ...], pcap_dir: str | None,
         target: dict[str, Any] | None, argv: Sequence[str], duration: float | None,
         record: Any, where: str,
         say: Say) -> tuple[Tracer, subprocess.CompletedProcess[bytes] | None]:
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
    return tracer, result
