"""`netlab logs` and `netlab metrics`: what the lab's mesh processes report.

Logs are the files the applier writes per process; metrics are scraped from 15020
inside each node netns, where a Prometheus on the host network would find ztunnel.
"""

from __future__ import annotations

import os
import sys

import click

from netlab.errors import NetlabError
from netlab.kernel import query
from netlab.kernel.lifecycle import require_root


@click.command("logs")
@click.argument("lab")
@click.argument("component", required=False)
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines")
def logs(lab: str, component: str | None, follow: bool) -> None:
    """Print a lab's process logs: `ztunnel` (all nodes), `ztunnel/NODE`, any process, or a pod (ns/name: its processes)."""
    paths = query.log_files(query.record_of(lab), component)
    several = len(paths) > 1
    if follow:
        from netlab.observe.logs import follow as follow_logs

        try:
            for path, line in follow_logs(paths):
                tag = os.path.basename(path).removesuffix(".log") + ": " if several else ""
                sys.stdout.write(tag + line)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a follow ends, not an error
        return
    for path in paths:
        if several:
            click.echo(f"==> {os.path.basename(path)} <==")
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                sys.stdout.write(f.read())


@click.command("metrics")
@click.argument("lab")
def metrics(lab: str) -> None:
    """Scrape every ztunnel's :15020/metrics from inside its node netns."""
    from netlab.observe.metrics import scrape

    require_root()
    zts = query.processes_named(query.record_of(lab), "ztunnel/")
    if not zts:
        raise NetlabError(f"lab {lab} runs no ztunnel (no ambient pods)")
    for p in zts:
        click.echo(f"# ztunnel {p.name.split('/', 1)[1]} ({p.netns})")
        sys.stdout.write(scrape(p.netns))


COMMANDS: list[click.Command] = [logs, metrics]
