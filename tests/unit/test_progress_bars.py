"""`up`'s progress: one bar per build step; a "step: detail" names what the step is on."""

from __future__ import annotations

from netlab.cli.render import progress_bars


def test_detail_updates_the_steps_one_bar() -> None:
    prog, update = progress_bars()
    update("processes", 6, 6)
    update("ready: dns", 0, 6)
    update("ready: app/monitoring/prometheus-0/prometheus", 5, 6)
    assert [t.description for t in prog.tasks] == ["processes", "ready: app/monitoring/prometheus-0/prometheus"]
    update("ready", 6, 6)
    ready = prog.tasks[1]
    assert (ready.description, ready.completed, ready.total) == ("ready", 6, 6)
