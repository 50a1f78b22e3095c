"""Run a lab's variants, each on its own freshly built instance, and always tear it down.

Each variant builds `lab.model(variant)` with `netlab.kernel.lifecycle.up` under a
unique instance name derived from the lab's name, so variants, tests and a user's own
labs never collide. Why one instance per variant even where two variants share a model:
a variant leaves traces a later one would read as its own (pooled HBONE connections,
a hung connection still retransmitting, conntrack entries), and a verdict must rest on
what *this* variant did.

Teardown runs in `finally` with SIGINT and SIGTERM held off until it is done, so Ctrl-C
or `kill` in the middle of a variant still removes everything that variant built, and
then stops the run. `keep` leaves the instance up on purpose, for `netlab exec`.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
import traceback
from contextlib import contextmanager
from dataclasses import replace
from types import FrameType
from typing import Callable, Iterator

from netlab import model
from netlab.errors import NetlabError
from netlab.kernel import lifecycle
from netlab.kernel.ownership import LabRecord
from netlab.labs.context import Context
from netlab.labs.framework import Lab, VariantResult, evaluate

__all__ = ["run", "run_variant", "teardown", "instance_name", "shielded", "VariantResult"]

Progress = Callable[[str], None]
_serial = itertools.count()


def _quiet(message: str) -> None:
    pass


def instance_name(lab: str) -> str:
    """`mirrord-ambient-steal` → `mas<pid>n<k>`: short (netns names carry it), unique per
    process and call, and recognisably the lab's."""
    words = [w for w in lab.split("-") if w]
    prefix = "".join(w[0] for w in words)[:4]
    if len(prefix) < 2:
        prefix = "".join(words)[:2]
    return f"{prefix}{os.getpid() % 100000}n{next(_serial)}"


@contextmanager
def shielded() -> Iterator[None]:
    """Hold SIGINT and SIGTERM off for the body; if one came, raise KeyboardInterrupt after.

    A second Ctrl-C must not interrupt the cleanup it asked for, and must not be lost:
    the run stops once the cleanup is done.
    """
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    old = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if caught:
            raise KeyboardInterrupt


def teardown(name: str) -> None:
    """Remove the instance if it exists, shielded from Ctrl-C and SIGTERM."""
    with shielded():
        if LabRecord.load(name) is not None:
            lifecycle.down(name)


def run_variant(lab: Lab, variant_name: str, keep: bool = False, progress: Progress = _quiet,
                base: model.Lab | None = None) -> VariantResult:
    """Build, drive and judge one variant; a failure anywhere is a variant not as expected."""
    variant = lab.variant(variant_name)
    name = instance_name(lab.name)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    evidence: dict = {}
    error = None

    def lap(key: str, since: float) -> float:
        now = time.perf_counter()
        timings[key] = round(now - since, 2)
        return now

    with lifecycle.sigterm_as_interrupt():
        try:
            progress(f"{variant.name}: building lab instance {name}")
            built = replace(lab.model(variant, base), name=name)
            t = time.perf_counter()
            lifecycle.up(built)
            t = lap("build", t)
            evidence = lab.traffic(Context(name, variant, progress))
            lap("traffic", t)
        except NetlabError as e:
            error = str(e)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - a broken variant is a failed variant
            error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
        finally:
            if not keep:
                progress(f"{variant.name}: tearing down {name}")
                t = time.perf_counter()
                teardown(name)
                lap("teardown", t)
    verdicts = evaluate(variant, evidence) if error is None else []
    return VariantResult(lab.name, variant.name, variant.summary, variant.outcome, name,
                         round(time.perf_counter() - started, 2), verdicts, evidence, error,
                         timings)


def run(lab: Lab, variants: list[str] | None = None, keep: bool = False,
        progress: Progress = _quiet,
        on_result: Callable[[VariantResult], None] = lambda r: None) -> list[VariantResult]:
    """Every variant (or the named ones) in order; unknown names fail before anything is built."""
    chosen = variants or [v.name for v in lab.variants]
    for v in chosen:
        lab.variant(v)
    base = lab.topology()  # parsed once; each variant's change copies what it changes
    results = []
    for v in chosen:
        res = run_variant(lab, v, keep, progress, base)
        on_result(res)
        results.append(res)
    return results
