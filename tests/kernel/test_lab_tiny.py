"""The lab framework end to end on the real kernel, with a lab built only from its API.

tests/labs/tiny: one variant that works, one broken by a change to the model. Each
must show its outcome, and nothing of either instance may be left behind: no state
directory, no netns, no process, also when the traffic is interrupted.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import pytest

from netlab.kernel import interrupts
from netlab.kernel.ownership import ProcessRecord
from netlab.kernel.processes import is_ours
from netlab.labs import runner
from netlab.labs.context import Context
from netlab.labs.framework import NOT_AS_EXPECTED, Evidence, unchanged
from tests.labs.tiny import LAB


class Spy:
    """Wraps the lab's traffic to note each instance and its processes, for the leak check."""

    def __init__(self, interrupt: bool = False, signal_self: int | None = None) -> None:
        self.instances: list[str] = []
        self.processes: list[ProcessRecord] = []
        self.interrupt = interrupt
        self.signal_self = signal_self

    def __call__(self, ctx: Context) -> Evidence:
        self.instances.append(ctx.instance)
        self.processes += ctx.record.processes
        if self.interrupt:
            raise KeyboardInterrupt
        if self.signal_self is not None:
            os.kill(os.getpid(), self.signal_self)  # as `kill` would, mid-traffic
        return LAB.traffic(ctx)

    def assert_nothing_left(self) -> None:
        assert self.instances and self.processes
        for name in self.instances:
            assert not os.path.exists(f"/run/netlab/{name}"), name
            assert not [n for n in os.listdir("/run/netns") if n.startswith(f"nl-{name}-")]
        assert not [p.name for p in self.processes if is_ours(p)]


@pytest.mark.kernel
def test_tiny_lab_shows_both_outcomes_and_leaves_nothing() -> None:
    spy = Spy()
    results = runner.run(replace(LAB, traffic=spy))
    by = {r.variant: r for r in results}
    assert by["works"].ok, by["works"].observed
    assert by["works"].observed.word == "works" and by["works"].observed.good
    assert by["broken"].ok, by["broken"].observed
    assert by["broken"].observed.word == "broken" and by["broken"].observed.good is False
    assert by["broken"].evidence["counters"]["TcpOutRsts"] > 0
    assert all(r.instance.startswith("te") for r in results)
    assert set(by["works"].timings) == {"build", "traffic", "teardown"}
    spy.assert_nothing_left()


@pytest.mark.kernel
def test_a_variant_that_does_not_show_its_outcome_is_not_as_expected() -> None:
    broken = LAB.variant("broken")
    lab = replace(LAB, variants=(replace(broken, change=unchanged),))  # the port stays open
    (r,) = runner.run(lab)
    assert not r.ok and r.observed.word == NOT_AS_EXPECTED
    assert "refused: expected curl exits 7" in r.observed.meaning


@pytest.mark.kernel
def test_ctrl_c_in_the_traffic_still_tears_down() -> None:
    spy = Spy(interrupt=True)
    with pytest.raises(KeyboardInterrupt):
        runner.run(replace(LAB, traffic=spy), ["works"])
    spy.assert_nothing_left()


@pytest.mark.kernel
def test_sigterm_during_the_traffic_stops_the_run_after_teardown() -> None:
    spy = Spy(signal_self=signal.SIGTERM)
    with pytest.raises(interrupts.Interrupted):
        runner.run(replace(LAB, traffic=spy))  # two variants: the run stops after the first
    assert len(spy.instances) == 1
    spy.assert_nothing_left()
