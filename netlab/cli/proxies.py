"""`netlab logs`, `netlab metrics` and `netlab proxy-config`: what the lab's mesh processes
report, and the config a sidecar was started with.

Logs are the files the applier writes per process; metrics are scraped from 15020
inside each node netns, where a Prometheus on the host network would find ztunnel,
and shown as a table (`--raw` for the exposition text itself).
"""

from __future__ import annotations

import json
import os
import sys

import click
from rich.markup import escape
from rich.table import Table

from netlab.cli.render import err, out

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
@click.option("--filter", "name_filter", metavar="NAME",
              help="Only metrics whose name contains NAME (e.g. tcp_sent, istio_tcp_connections_opened).")
@click.option("--summary", is_flag=True, help="One row per metric: how many series, and their sum.")
@click.option("--raw", is_flag=True, help="The exposition text as served (what Prometheus scrapes).")
@click.option("-o", "--output", type=click.Choice(["wide"]), help="wide: every label of every series.")
@click.option("--json", "as_json", is_flag=True, help="The samples as JSON: source, name, labels, value.")
def metrics(lab: str, name_filter: str | None, summary: bool, raw: bool, output: str | None,
            as_json: bool) -> None:
    """Scrape every ztunnel's :15020/metrics from inside its node netns; a table by default."""
    from netlab.observe import metrics as m

    require_root()
    zts = query.processes_named(query.record_of(lab), "ztunnel/")
    if not zts:
        raise NetlabError(f"lab {lab} runs no ztunnel (no ambient pods)")
    scraped = [(p.name, p.netns, m.scrape(p.netns)) for p in zts]
    if raw:
        for name, netns, text in scraped:
            click.echo(f"# {name} ({netns})")
            text = m.raw_filtered(text, name_filter)
            sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        return
    samples = m.select([s for name, _, text in scraped for s in m.parse(name, text)], name_filter)
    if as_json:
        out().print_json(json.dumps([{"source": s.source, "name": s.name, "labels": s.labels, "value": s.value}
                                     for s in samples]))
        return
    if not samples:
        err().print(f"no metrics{' matching ' + repr(name_filter) if name_filter else ''} yet "
                    "(a series appears with the first connection it counts)", highlight=False)
        return
    if summary:
        t = Table("ztunnel", "metric", "series", "sum", title="metrics summary")
        for row in m.summarize(samples):
            t.add_row(str(row["source"]), str(row["name"]), str(row["series"]), _number(float(row["sum"])))
        out().print(t)
        return
    wide = output == "wide"
    t = Table("ztunnel", "metric", "reporter", "source → destination", "labels", "value")
    for s in sorted(samples, key=lambda s: (s.source, s.name, m.flow(s.labels))):
        t.add_row(s.source, s.name, s.labels.get("reporter", ""), m.flow(s.labels),
                  escape(m.details(s.labels, wide)), _number(s.value))
    out().print(t)


def _number(v: float) -> str:
    return str(int(v)) if v == int(v) else f"{v:g}"


@click.command("proxy-config")
@click.argument("lab")
@click.argument("pod")
@click.argument("kind", type=click.Choice(["listeners", "routes", "clusters", "endpoints"]))
@click.option("--json", "as_json", is_flag=True, help="The Envoy-shaped resources themselves.")
def proxy_config(lab: str, pod: str, kind: str, as_json: bool) -> None:
    """A sidecar's config as `istioctl proxy-config KIND POD` prints it (POD as `exec` names it)."""
    from netlab.observe import proxy_config as pc

    snap = pc.load(lab, pod)
    if as_json:
        out().print_json(json.dumps(pc.as_json(snap, kind)))
        return
    sys.stdout.write(pc.table(snap, kind))


COMMANDS: list[click.Command] = [logs, metrics, proxy_config]
