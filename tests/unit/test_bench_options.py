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
