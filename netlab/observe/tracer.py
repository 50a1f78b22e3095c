"""The tracing API labs and tests use: collectors + pcap around a block of traffic.

    with Tracer({"nl-x-client": ino1, "nl-x-server": ino2}, port=8080) as t:
        ... traffic ...
        t.wait_for(lambda evs: any(e.kind == "drop" for e in evs))
    t.timelines()

A collector that cannot run raises before any traffic (strict, the default) so a test
never passes on missing evidence; with strict=False it is skipped and the reason is
kept in `skipped`.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Callable, Iterable

from netlab.errors import NetlabError
from netlab.observe import registry
from netlab.observe.collector import Collector, Scope
from netlab.observe.events import Event
from netlab.observe.order import place
from netlab.observe.timeline import Timeline, build_timelines


DRAIN_QUIET_S = 0.3  # no new event for this long after the command: the trace is drained
DRAIN_MAX_S = 2.0  # ... but never wait longer (a busy lab never goes quiet)


class TracerError(NetlabError):
    pass


class _Sink:
    """What collectors deliver to. Called with one Event, or told by notify() that a
    collector holds raw records; those are decoded by the collector's flush() when the
    Tracer's events are read, so decoding stays off the packet path."""

    def __init__(self, tracer: "Tracer") -> None:
        self._tracer = tracer

    def __call__(self, ev: Event) -> None:
        self._tracer._add([ev])

    def notify(self) -> None:
        with self._tracer._cond:
            self._tracer._cond.notify_all()


class Tracer:
    def __init__(self, netns: dict[str, int], port: int | None = None,
                 address: str | None = None,
                 collectors: Iterable[str] | None = None,
                 pcap_dir: str | Path | None = None, strict: bool = True) -> None:
        self.scope = Scope(netns=dict(netns), port=port, address=address)
        # None: every registered collector (registry.py), in its order.
        self.collector_names = registry.names() if collectors is None else tuple(collectors)
        self.pcap_dir = pcap_dir
        self.strict = strict
        self.counters: dict[str, dict[str, int]] = {}
        self.skipped: dict[str, str] = {}
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._running: list[Collector] = []
        self._pcap = None
        self._sink = _Sink(self)
        self._started: list[Collector] = []  # flushed on every read, also after stop()

    def _add(self, evs: list[Event]) -> None:
        if not evs:
            return
        with self._cond:
            self._events.extend(evs)
            self._cond.notify_all()

    def _collect(self) -> None:
        """Decode what collectors have buffered (also after they stopped)."""
        for col in list(self._started):
            self._add(col.flush())

    @property
    def events(self) -> list[Event]:
        """A time-ordered snapshot (ring buffers and threads deliver out of order).

        After stop(), conntrack and nftrace events stand at their packets' times
        (netlab.observe.order); while running, at the time they were read."""
        self._collect()
        with self._cond:
            return sorted(self._events, key=lambda e: e.ts_ns)

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 5.0) -> bool:
        """Block until predicate(events) holds; the condition-based replacement for sleep."""
        deadline = time.monotonic() + timeout
        while True:
            self._collect()
            with self._cond:
                if predicate(self._events):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    def drain(self, quiet: float = DRAIN_QUIET_S, limit: float = DRAIN_MAX_S) -> int:
        """Wait until events stop arriving, bounded by `limit`; the number seen at the end.

        The BPF ring and the conntrack sockets are read every 50 ms by threads, nftrace by
        its own; each round returns as soon as a new event lands and ends after `quiet`
        seconds without one.
        """
        deadline = time.monotonic() + limit
        seen = len(self.events)
        while time.monotonic() < deadline:
            budget = min(quiet, deadline - time.monotonic())
            if not self.wait_for(lambda evs, n=seen: len(evs) > n, timeout=budget):
                break
            seen = len(self.events)
        return seen

    def timelines(self) -> list[Timeline]:
        return build_timelines(self.events)

    def start(self) -> "Tracer":
        try:
            for name in self.collector_names:
                try:
                    col = registry.create(name)
                except registry.UnknownCollector as e:
                    raise TracerError(str(e)) from None
                cap = col.can_run()
                if not cap.ok:
                    if self.strict:
                        raise TracerError(f"collector {name} cannot run: {cap.reason}")
                    self.skipped[name] = cap.reason
                    continue
                col.start(self.scope, self._sink)
                self._running.append(col)
                self._started.append(col)
            if self.pcap_dir is not None:
                from netlab.observe.pcap import PcapWriter
                self._pcap = PcapWriter(self.pcap_dir)
                self._pcap.start(list(self.scope.netns))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> dict[str, dict[str, int]]:
        """Stop everything, even when one collector fails; then raise the first error."""
        errors: list[BaseException] = []
        if self._pcap is not None:
            try:
                self.counters["pcap"] = self._pcap.stop()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
            self._pcap = None
        for col in reversed(self._running):
            try:
                self.counters[col.name] = col.stop()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        self._running = []
        try:
            self._collect()
            # The set is final: tie conntrack/nftrace events to their packets' times.
            with self._cond:
                self._events = place(self._events)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        if errors:
            raise errors[0]
        return self.counters

    def __enter__(self) -> "Tracer":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def run_traced(tracer: Tracer, netns_name: str, argv: list[str],
               timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run argv inside a traced netns (ip netns exec) and return its result."""
    if netns_name not in tracer.scope.netns:
        raise TracerError(f"{netns_name} is not in the tracer's scope")
    return subprocess.run(["ip", "netns", "exec", netns_name, *argv], capture_output=True,
                          text=True, timeout=timeout)
