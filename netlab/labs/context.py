"""What a lab's traffic function gets: the built instance, and the few ways to act on it.

    def traffic(ctx: Context) -> Evidence:
        client, server = ctx.pod("demo/client"), ctx.pod("demo/echo")
        res = ctx.exec(client, ["curl", "-sS", "http://echo.demo:8080/"], timeout=5)
        return {"client": {"exit_code": res.returncode, "stdout": res.stdout}}

Everything runs where the lab's own processes run: `exec` is the real client in the
pod's netns with the pod's resolv.conf; `start` launches a helper process (an agent, a
server) in a pod with the ready pipe and records it in the lab, so teardown (and
`netlab down` after `--keep`) stops it like any other process of the lab.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from netlab.kernel import netns as nsmod
from netlab.kernel import processes, query, zygote
from netlab.kernel.apply import wait_signalled
from netlab.kernel.ownership import LabRecord, ProcessRecord
from netlab.labs.framework import Variant
from netlab.readiness import ReadyPipe

Pod = dict[str, Any]  # one pod of the `status --json` shape (namespace, name, ip, node, netns)
Progress = Callable[[str], None]
READY_TIMEOUT = 15.0


POLL_INTERVAL = 0.02  # s between looks at a log file or a scrape; bounded by the caller's deadline


def poll_until(what: Callable[[], Any], timeout: float) -> Any:
    """Look at `what()` until it is truthy or `timeout` seconds pass; return its last value.

    For evidence that has no event to wait on (a proxy writes its access log when a
    connection closes): the last value is what the lab judges, so a timeout shows up as
    the evidence that was there, never as a crash."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(POLL_INTERVAL)


@dataclass
class Helper:
    """A process the traffic started in a pod; `stop()` ends it and returns its log."""

    record: ProcessRecord
    argv: list[str]
    gid: int = 0
    forget: Callable[[ProcessRecord], None] = lambda rec: None  # drop it from the lab record
    stopped: bool = field(default=False, init=False)

    @property
    def pid(self) -> int:
        return self.record.pid

    def alive(self) -> bool:
        return not self.stopped and processes.is_ours(self.record)

    def stop(self, grace: float = 5.0) -> str:
        """SIGTERM (SIGKILL after `grace`), then its whole log: what it said while it ran."""
        if not self.stopped:
            processes.stop([self.record.pid], grace=grace)
            self.stopped = True
            self.forget(self.record)  # stopped on purpose: not a process that died
        return self.log()

    def log(self) -> str:
        try:
            with open(self.record.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class Context:
    """One variant's view of its built instance."""

    def __init__(self, instance: str, variant: Variant, progress: Progress) -> None:
        self.instance = instance
        self.variant = variant
        self.record: LabRecord = query.record_of(instance)
        self.helpers: list[Helper] = []
        self._progress = progress

    @property
    def params(self) -> Any:
        return self.variant.params

    def progress(self, message: str) -> None:
        """Say what the traffic is doing now (the command line shows it as a status)."""
        self._progress(f"{self.variant.name}: {message}")

    def pod(self, ref: str) -> Pod:
        """`ns/name`, a unique pod name, or a single-replica deployment's name."""
        return query.find_pod(self.record, ref)

    def node(self, name: str) -> dict[str, Any]:
        for n in self.record.summary.get("nodes", []):
            if n["name"] == name:
                return dict(n)
        raise KeyError(f"no node {name!r} in {self.instance}")

    def netns(self, pod: Pod | str) -> str:
        return (self.pod(pod) if isinstance(pod, str) else pod)["netns"]

    def scope(self, *netns: str) -> dict[str, int]:
        """netns name → inode, the scope a `netlab.observe.Tracer` is given."""
        return {n: nsmod.inode(n) for n in netns}

    def pids(self) -> list[int]:
        """Every process of the instance, the lab's own and the helpers, alive now."""
        return [p.pid for p in self.record.processes if processes.is_ours(p)]

    def process_name(self, pid: int | None) -> str | None:
        return next((p.name for p in self.record.processes if p.pid == pid), None)

    def exec(self, pod: Pod | str, argv: Sequence[str],
             timeout: float) -> subprocess.CompletedProcess[str]:
        """Run the real client to completion in the pod (its netns and resolv.conf)."""
        p = self.pod(pod) if isinstance(pod, str) else pod
        return processes.run_in(p["netns"], list(argv), query.pod_resolv_conf(self.record, p),
                                capture_output=True, text=True, timeout=timeout)

    def start(self, name: str, pod: Pod | str, argv: Sequence[str], gid: int = 0,
              ready_timeout: float = READY_TIMEOUT) -> Helper:
        """Start a helper in the pod and return once it says ready on its ready pipe.

        The helper must announce readiness (`netlab.readiness.announce`, as netlab's own
        processes do); an early exit fails at once, with the end of its log.
        """
        p = self.pod(pod) if isinstance(pod, str) else pod
        logs = os.path.join(self.record.dir, "logs")
        os.makedirs(logs, exist_ok=True)
        log = os.path.join(logs, name.replace("/", "_") + ".log")
        pipe = ReadyPipe()
        # Forked from the pre-imported zygote when argv is `python -m netlab...` (kernel/zygote.py)
        rec = zygote.spawn(name, p["netns"], list(argv), log,
                           query.pod_resolv_conf(self.record, p), gid=gid, ready=pipe)
        self.record.processes.append(rec)  # teardown and `netlab down` stop it too
        self.record.save()
        helper = Helper(rec, list(argv), gid, self._forget)
        self.helpers.append(helper)
        wait_signalled(pipe, rec, ready_timeout)
        return helper

    def _forget(self, rec: ProcessRecord) -> None:
        self.record.processes = [p for p in self.record.processes if p is not rec]
        self.record.save()
