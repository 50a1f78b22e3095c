"""`netlab export FILE... --to kind DIR`: the same files, made ready for a real cluster
(logic in netlab/topology/export.py)."""

from __future__ import annotations

import click

from netlab.cli.render import err
from netlab.topology.export import TARGETS, export as export_files


@click.command("export")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--to", "to", nargs=2, required=True, metavar="TARGET DIR",
              help=f"Where to: {', '.join(TARGETS)}, and the directory to write into.")
def export(files: tuple[str, ...], to: tuple[str, str]) -> None:
    """Write a kind cluster config, the manifests without the Lab document (built-in
    images mapped to public ones), the istioctl install line and a README into DIR."""
    target, out_dir = to
    if target not in TARGETS:
        raise click.BadParameter(f"{target!r}; use one of: {', '.join(TARGETS)}", param_hint="--to")
    result = export_files(list(files), target, out_dir)
    mapped = ", ".join(f"{k} -> {v}" for k, v in result.mapped.items()) or "none"
    err().print(f"wrote {len(result.files)} files to {out_dir}: {result.documents} documents validated "
                f"against Kubernetes' and the CRDs' schemas; images: {mapped}", highlight=False)
    for note in result.notes:
        err().print(f"[yellow]note:[/] {note}", highlight=False)
    err().print(f"next: follow {out_dir}/README.md (kind create cluster --config {out_dir}/kind-cluster.yaml ...)",
                highlight=False)


COMMANDS: list[click.Command] = [export]
