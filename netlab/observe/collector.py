"""The collector lifecycle every observation plug-in follows (Retis' shape).

can_run() says *why not* in plain words; start(); events arrive through the sink
callback; stop() removes everything the collector installed (BPF programs, trace
rules, subprocesses) and reports what it lost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from netlab.observe.events import Event

Sink = Callable[[Event], None]


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
    name: str = "collector"

    @abstractmethod
    def can_run(self) -> Capability: ...

    @abstractmethod
    def start(self, scope: Scope, sink: Sink) -> None: ...

    @abstractmethod
    def stop(self) -> dict[str, int]:
        """Stop and undo; return counters such as {"events": n, "lost": m}."""
