"""`netlab ztunnel-config LAB VIEW`: each ztunnel's workloads, services, policies and
certificates, as `istioctl ztunnel-config` shows them (logic in netlab/observe/ztunnel_config.py)."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from netlab.cli.render import out
from netlab.kernel.lifecycle import require_root
from netlab.observe import ztunnel_config as zc


@click.command("ztunnel-config")
@click.argument("lab")
@click.argument("view", type=click.Choice(zc.VIEWS))
@click.option("--node", help="Only the ztunnel of this node (default: every node's).")
@click.option("--json", "as_json", is_flag=True, help="The config dump itself, node -> dump (docs/ztunnel-config.md).")
def ztunnel_config(lab: str, view: str, node: str | None, as_json: bool) -> None:
    """What each node's ztunnel holds: read from its admin port (127.0.0.1:15000/config_dump)."""
    require_root()
    dumps = zc.dumps(lab, node)
    if as_json:
        out().print_json(json.dumps({n: d[view] for n, d in dumps.items()}))
        return
    for n, dump in dumps.items():
        t = Table(*(title for title, _ in zc.COLUMNS[view]), title=f"ztunnel/{n}: {view}",
                  box=None, header_style="bold", pad_edge=False)
        for row in zc.rows(view, dump):
            t.add_row(*(escape(row[key]) for _, key in zc.COLUMNS[view]))
        out().print(t)


COMMANDS: list[click.Command] = [ztunnel_config]
