"""Every count and duration a bench takes refuses 0 and below before anything runs.

`bench hbone --seconds 0` once reached iperf3 as `-t 0` (run for ever) and came back as
an internal error 30 s later."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from netlab.cli.app import main
from netlab.cli.bench import bench

INT_OPTIONS = [(name, p.opts[0]) for name, cmd in bench.commands.items() for p in cmd.params
               if isinstance(p, click.Option) and isinstance(p.type, (click.types.IntParamType, click.IntRange))]


def test_the_benches_have_numeric_options() -> None:
    assert len(INT_OPTIONS) >= 10


@pytest.mark.parametrize("command, option", INT_OPTIONS)
def test_a_negative_value_is_a_usage_error(command: str, option: str) -> None:
    res = CliRunner().invoke(main, ["bench", command, option, "-1"])
    assert res.exit_code == 2 and "not in the range" in res.output, res.output


@pytest.mark.parametrize("command, option", [(c, o) for c, o in INT_OPTIONS if o != "--servers"])
def test_zero_is_a_usage_error_where_zero_means_nothing(command: str, option: str) -> None:
    res = CliRunner().invoke(main, ["bench", command, option, "0"])
    assert res.exit_code == 2 and "not in the range" in res.output, res.output


@pytest.mark.parametrize("extra, named", [(["--pods", "50"], "--pods"), (["--servers", "3"], "--servers"),
                                          (["--vs-mininet"], "--vs-mininet")])
def test_the_curve_refuses_what_it_would_ignore(extra: list[str], named: str) -> None:
    res = CliRunner().invoke(main, ["bench", "topology", "--curve", *extra])
    assert res.exit_code == 2 and f"drop {named}" in res.output, res.output


def test_the_curve_takes_the_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from netlab.bench import topology as bt

    seen: dict[str, object] = {}

    def curve(mesh: str, nodes: int, sizes: tuple[int, ...], runs: int, say: object) -> dict:
        seen.update(mesh=mesh, nodes=nodes, sizes=sizes, runs=runs)
        return {"mesh": mesh, "nodes": nodes, "runs": runs, "reference": 200, "rows": []}

    monkeypatch.setattr(bt, "curve", curve)
    monkeypatch.setattr("netlab.cli.bench.require_root", lambda: None)
    res = CliRunner().invoke(main, ["bench", "topology", "--curve", "--runs", "3", "--nodes", "2"])
    assert res.exit_code == 0, res.output
    assert seen == {"mesh": "ambient", "nodes": 2, "sizes": bt.CURVE_PODS, "runs": 3}
    assert "medians of 3 runs per size" in res.output
