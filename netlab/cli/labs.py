"""`netlab lab list|run|explain`: the labs registry, runner and report, on the command line."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.markdown import Markdown
from rich.table import Table

from netlab.cli.render import err, out
from netlab.errors import NetlabError
from netlab.kernel.lifecycle import require_root
from netlab.labs import registry


@click.group("lab")
def lab() -> None:
    """Labs: reproduce a field report on the real kernel, judged on observed evidence."""


@lab.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """The labs netlab knows, with their variants and the outcome each must show."""
    from netlab.labs import report

    labs = [registry.get(n) for n in registry.names()]
    if as_json:
        out().print_json(json.dumps([{"name": lb.name, "title": lb.title, "variants": [
            {"name": v.name, "summary": v.summary, "outcome": v.outcome.to_dict()}
            for v in lb.variants]} for lb in labs]))
        return
    t = Table(caption="`netlab lab explain LAB` tells the story; --json adds the titles")
    t.add_column("lab", no_wrap=True)  # whole names: scripts grep for them
    t.add_column("variant", no_wrap=True)
    t.add_column("must show", overflow="fold")
    for lb in labs:
        for i, v in enumerate(lb.variants):
            t.add_row(lb.name if i == 0 else "", v.name, report.outcome_text(v.outcome))
    out().print(t)


@lab.command()
@click.argument("name")
def explain(name: str) -> None:
    """The exercise: what the user sees, why, hints, and the fix."""
    text = registry.get(name).explain()
    if sys.stdout.isatty():
        out().print(Markdown(text))
    else:
        click.echo(text)


@lab.command()
@click.argument("name")
@click.option("--variant", "variants", multiple=True, help="Run only these (repeatable).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Write report.md, report.html and results.json here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--keep", is_flag=True, help="Leave each variant's lab instance up.")
def run(name: str, variants: tuple[str, ...], report_dir: str | None, as_json: bool,
        keep: bool) -> None:
    """Run every variant of NAME (or --variant ones); exit 0 only if each showed its outcome."""
    from netlab.labs import report, runner

    require_root()
    the_lab = registry.get(name)
    for v in variants:
        try:
            the_lab.variant(v)
        except KeyError:
            raise NetlabError(f"lab {name} has no variant {v!r}; variants: "
                              f"{', '.join(x.name for x in the_lab.variants)}") from None
    console = err()
    with console.status(f"lab {name}") as status:
        def progress(msg: str) -> None:
            status.update(msg)

        def on_result(r: runner.VariantResult) -> None:
            # The outcome in its user colour; "as expected" in plain words beside it.
            line = report.outcome_text(r.observed, with_meaning=False)
            line.append(f"  {r.variant} ({r.seconds:.1f}s, {report.as_expected(r)}): "
                        f"{r.summary}")
            console.print(line, highlight=False)
            for v in r.verdicts:
                if not v.held:
                    console.print(f"     ✘ {v.id}: expected {v.expected}\n"
                                  f"       saw: {v.seen}", highlight=False)
            if r.error:
                console.print(f"     [bold]error:[/] {r.error}", highlight=False)

        results = runner.run(the_lab, list(variants) or None, keep, progress, on_result)
    if report_dir:
        paths = report.write(report_dir, the_lab, results)
        console.print("report: " + ", ".join(os.path.relpath(p) for p in paths))
    if as_json:
        click.echo(json.dumps(report.results_json(the_lab, results), indent=1))
    else:
        out().print(report.summary_table(results))
    if keep:
        console.print("kept: " + ", ".join(dict.fromkeys(r.instance for r in results))  # shared once
                      + " (remove with `netlab down NAME`)")
    sys.exit(0 if results and all(r.ok for r in results) else 1)


COMMANDS: list[click.Command] = [lab]
