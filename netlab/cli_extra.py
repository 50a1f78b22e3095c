"""CLI commands of the later layers (observe, mesh, labs), registered onto the main group.

Each command is registered here once its layer exists; until then it answers plainly
that it is not built (exit 3) rather than pretending.
"""

from __future__ import annotations

from typing import Any, Callable

import click


def register(main: click.Group, not_built: Callable[[str, str], Callable[..., None]]) -> None:
    from netlab.dataplane.ztunnel import cli as ztunnel_cli
    ztunnel_cli.register(main)
    from netlab.observe import cli as observe_cli
    observe_cli.register(main)
    from netlab.labs.cli import register as register_labs
    register_labs(main)
    for name, issue, params in [
        ("trace", "issue 4: observation", [click.Argument(["args"], nargs=-1)]),
        ("doctor", "issue 4: observation", []),
        ("logs", "issue 3: ambient dataplane", [click.Argument(["args"], nargs=-1)]),
        ("metrics", "issue 3: ambient dataplane", [click.Argument(["args"], nargs=-1)]),
        ("lab", "issue 5: labs", [click.Argument(["args"], nargs=-1)]),
    ]:
        if name not in main.commands:
            main.add_command(click.Command(name, callback=not_built(name, issue), params=params,
                                           help=f"Not built yet ({issue}).",
                                           context_settings={"ignore_unknown_options": True}))


__all__: list[Any] = ["register"]
