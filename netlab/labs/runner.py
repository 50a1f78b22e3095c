"""Run a lab's variants, each in its own lab instance, and always tear it down.

Each variant gets a unique instance name (so variants, tests and a user's own labs
never collide). Teardown happens in `finally` with SIGINT ignored, so Ctrl-C in the
middle of a variant still removes everything that variant built; `keep` leaves the
instance up on purpose, for poking at it with `netlab exec`.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from typing import Callable

from netlab.errors import NetlabError
from netlab.kernel import lifecycle
from netlab.kernel.ownership import LabRecord
from netlab.labs.framework import Lab, VariantResult, evaluate

__all__ = ["run", "run_variant", "teardown", "VariantResult"]

Progress = Callable[[str], None]


def instance_name(index: int) -> str:
    """Short (netns names carry it) and unique per process and variant."""
    return f"ms{os.getpid() % 100000}v{index}"


def teardown(name: str) -> None:
    """Remove the instance if it exists, shielded from a second Ctrl-C."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if LabRecord.load(name) is not None:
            lifecycle.down(name)
    finally:
        signal.signal(signal.SIGINT, old)


def run_variant(lab: Lab, variant_name: str, index: int, keep: bool = False,
                progress: Progress = lambda msg: None) -> VariantResult:
    variant = lab.variant(variant_name)
    name = instance_name(index)
    started = time.perf_counter()
    evidence: dict = {}
    error = None
    with lifecycle.sigterm_as_interrupt():
        try:
            evidence = lab.scenario(variant, name, progress)
        except NetlabError as e:
            error = str(e)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - a broken scenario is a failed variant
            error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
        finally:
            if not keep:
                progress(f"{variant.name}: tearing down {name}")
                teardown(name)
    verdicts = evaluate(variant, evidence) if error is None else []
    return VariantResult(lab.name, variant.name, variant.summary, variant.works, name,
                         round(time.perf_counter() - started, 2), verdicts, evidence, error)


def run(lab: Lab, variants: list[str] | None = None, keep: bool = False,
        progress: Progress = lambda msg: None,
        on_result: Callable[[VariantResult], None] = lambda r: None) -> list[VariantResult]:
    chosen = variants or [v.name for v in lab.variants]
    for v in chosen:
        lab.variant(v)  # unknown names fail before anything is built
    results = []
    for i, v in enumerate(chosen):
        res = run_variant(lab, v, i, keep, progress)
        on_result(res)
        results.append(res)
    return results
