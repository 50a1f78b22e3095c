"""The collector lifecycle every observation plug-in follows (Retis' shape).

can_run() says *why not* in plain words; start(); events arrive through the sink
callback, or are held raw and handed over by flush(); stop() removes everything the
collector installed (BPF programs, trace rules, subprocesses) and reports what it
lost. Collectors are found by name in registry.py.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from netlab.observe.events import Event

Sink = Callable[[Event], None]

DRAIN_NICE = 10


@dataclass(frozen=True)
class Capability:
    ok: bool
    reason: str  # when ok: what it will use ("tracepoint skb:kfree_skb"); else why not


@dataclass(frozen=True)
class Scope:
    """What to watch: lab namespaces (name -> inode) and an optional port/address filter."""

    netns: dict[str, int]
    port: int | None = None
    address: str | None = None


class Collector(ABC):
    """can_run() -> start() -> events (sink, or flush()) -> stop().

    A sink that has a `notify()` method (the Tracer's) asks for deferred delivery:
    the collector calls notify() when raw data arrived and decodes it only in flush(),
    so decoding stays off the packet path. A plain callable sink gets Events as they
    are decoded instead.
    """

    name: str = "collector"

    @abstractmethod
    def can_run(self) -> Capability:
        """Whether start() can work here; when not, why, in words a user can act on."""

    @abstractmethod
    def start(self, scope: Scope, sink: Sink) -> None: ...

    def flush(self) -> list[Event]:
        """Events held back for deferred delivery, decoded now; also called after
        stop() to take the last ones. A collector that always calls its sink directly
        holds none."""
        return []

    @abstractmethod
    def stop(self) -> dict[str, int]:
        """Stop and undo; return counters such as {"events": n, "lost": m}."""


def yield_cpu() -> None:
    """Lower the calling thread's priority (Linux: setpriority on its TID). Drain
    threads only copy bytes into memory and the kernel buffers hold seconds of events,
    so the traced dataplane gets the CPU first; if they ever fall behind, the loss is
    counted (the BPF ring's `lost`, conntrack's ENOBUFS), never silent."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DRAIN_NICE)
    except OSError:
        pass
