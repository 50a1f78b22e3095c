"""Run a lab's variants, each on its own freshly built instance, and always tear it down.

Each variant builds `lab.model(variant)` with `netlab.kernel.lifecycle.up` under a
unique instance name derived from the lab's name, so variants, tests and a user's own
labs never collide. Why one instance per variant even where two variants share a model:
a variant leaves traces a later one would read as its own (pooled HBONE connections,
a hung connection still retransmitting, conntrack entries), and a verdict must rest on
what *this* variant did.

Signals are recorded, never raised from their handler (netlab.kernel.interrupts): a
Ctrl-C or SIGTERM takes effect after the build (which rolls itself back), after the
traffic, and after teardown, so teardown always runs to its end, and then the run
stops with `Interrupted`. A variant is short (seconds), so waiting for its step to end
costs little; a client the terminal's Ctrl-C reaches ends at once anyway. `keep` leaves
the instance up on purpose, for `netlab exec`.

The one exception is opt-in: variants that share an instance (`Variant.shares_instance`)
differ only in how they read the same run, e.g. two Kiali versions asking one
Prometheus, or are steps of one walk-through that each keep to their own pairs,
windows and series (ambient-tour). Building the same instance twice would cost a
Prometheus start each and show nothing new; one run also makes "old and new side by
side" the same data.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import traceback
from dataclasses import replace
from typing import Callable

from netlab import model
from netlab.errors import NetlabError
from netlab.kernel import interrupts, lifecycle
from netlab.kernel.ownership import LabRecord
from netlab.labs.context import Context
from netlab.labs.framework import Lab, VariantResult, evaluate

__all__ = ["run", "run_variant", "run_instance", "teardown", "instance_name", "VariantResult"]

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


def teardown(name: str) -> None:
    """Remove the instance if it exists; a signal meanwhile is recorded, acted on after."""
    with interrupts.deferred() as guard:
        if LabRecord.load(name) is not None:
            lifecycle.down(name)
    guard.check()


def run_variant(lab: Lab, variant_name: str, keep: bool = False, progress: Progress = _quiet,
                base: model.Lab | None = None) -> VariantResult:
    """Build, drive and judge one variant; a failure anywhere is a variant not as expected."""
    return run_instance(lab, [variant_name], keep, progress, base)[0]


def run_instance(lab: Lab, variant_names: list[str], keep: bool = False,
                 progress: Progress = _quiet, base: model.Lab | None = None) -> list[VariantResult]:
    """Build one instance, drive it once, and judge each named variant on that evidence.

    More than one name only for variants that share an instance (`Variant.shares_instance`:
    same change, same params, read differently); each result then names the others.
    """
    variants = [lab.variant(n) for n in variant_names]
    variant = variants[0]
    name = instance_name(lab.name)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    evidence: dict = {}
    error = None

    def lap(key: str, since: float) -> float:
        now = time.perf_counter()
        timings[key] = round(now - since, 2)
        return now

    with interrupts.deferred() as guard:
        try:
            progress(f"{variant.name}: building lab instance {name}")
            built = replace(lab.model(variant, base), name=name)
            t = time.perf_counter()

            def building(step: str, done: int, total: int) -> None:  # what `up` is on now
                progress(f"{variant.name}: building lab instance {name}: {step} ({done}/{total})")

            lifecycle.up(built, building)  # rolls back and raises Interrupted on a signal
            t = lap("build", t)
            guard.check()
            evidence = lab.traffic(Context(name, variant, progress))
            lap("traffic", t)
            guard.check()
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
                teardown(name)  # raises Interrupted here if a signal came at any point
                lap("teardown", t)
        guard.check()  # with --keep: still stop the run
    seconds = round(time.perf_counter() - started, 2)
    return [VariantResult(lab.name, v.name, v.summary, v.outcome, name, seconds,
                          evaluate(v, evidence) if error is None else [], evidence, error,
                          dict(timings), [n for n in variant_names if n != v.name])
            for v in variants]


def _warm(lab: Lab) -> threading.Thread | None:
    """Start `lab.warm` in a thread, so what the traffic needs loads while the first
    instance builds (mostly waiting on ip/iptables). A failure is left for the traffic
    to meet and report: warming is only a cache."""
    warm = lab.warm
    if warm is None:
        return None

    def body() -> None:
        try:
            warm()
        except Exception:  # noqa: BLE001,S110 - the traffic meets the same cause, reported
            pass

    thread = threading.Thread(target=body, name="netlab-warm", daemon=True)
    thread.start()
    return thread


def run(lab: Lab, variants: list[str] | None = None, keep: bool = False,
        progress: Progress = _quiet,
        on_result: Callable[[VariantResult], None] = lambda r: None) -> list[VariantResult]:
    """Every variant (or the named ones) in order; unknown names fail before anything is built."""
    chosen = variants or [v.name for v in lab.variants]
    for v in chosen:
        lab.variant(v)
    base = lab.topology()  # parsed once; each variant's change copies what it changes
    results = []
    warmer = _warm(lab)
    try:
        for group in lab.sharing(chosen):
            for res in run_instance(lab, group, keep, progress, base):
                on_result(res)
                results.append(res)
    finally:
        if warmer is not None:
            warmer.join()  # never leave it loading while the process exits
    return results
