"""The top-level `netlab` group, its guard, and the command groups hung on it.

The guard is why a user never sees a traceback for a mistake they can fix: every
NetlabError becomes one message and exit code 2, and Ctrl-C exit code 130 (after the
command's own rollback has run, e.g. `up` removing what it built); a SIGTERM that `up`
took as an interrupt, 143. Anything else is a bug: netlab.cli.entry reports it as one
`internal error` line with the traceback in a file, exit code 70.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from netlab.cli import bench, completion, export, labs, lifecycle, observe, proxies, telemetry, ztunnel
from netlab.cli.render import err, fail
from netlab.errors import NetlabError
from netlab.kernel.interrupts import Interrupted

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


class NetlabGroup(click.Group):
    """Turn every NetlabError into one plain message and a non-zero exit, never a traceback."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        # Parsing runs eager options such as --version here, outside `invoke`; click would
        # turn a Ctrl-C in it into "Aborted!" and exit code 1, not the documented 130.
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            err().print("interrupted")
            sys.exit(INTERRUPTED)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NetlabError as e:
            fail(str(e))
        except Interrupted as e:
            err().print(f"interrupted ({e}); everything this command started was removed")
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            err().print("interrupted; everything this command started was removed")
            sys.exit(INTERRUPTED)


@click.group(cls=NetlabGroup)
@click.version_option(package_name="netlab")
def main() -> None:
    """netlab: the service-mesh dataplane on real Linux namespaces, observed with eBPF."""


def _add_groups(group: click.Group) -> None:
    """Each command module lists its commands; adding them here keeps the modules
    independent of this one (none imports `main`)."""
    for module in (lifecycle, observe, proxies, labs, bench, telemetry, ztunnel, export, completion):
        for command in module.COMMANDS:
            group.add_command(command)
    completion.attach(group)  # lab and pod names complete wherever a command takes them


_add_groups(main)
