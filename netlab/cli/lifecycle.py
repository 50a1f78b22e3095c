"""`netlab up|down|clean|list|status|exec`: a lab's life on this machine."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.table import Table

from netlab import topology
from netlab.cli.render import err, fail, out, progress_bars
from netlab.kernel import interrupts, lifecycle, query
from netlab.plan.addons import prometheus as prometheus_addon


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--name", help="Lab name (default: the Lab document's metadata.name).")
@click.option("--prometheus", is_flag=True,
              help="Run a Prometheus in the lab, as `spec.prometheus.enabled: true` does (docs/prometheus.md).")
def up(files: tuple[str, ...], name: str | None, prometheus: bool) -> None:
    """Build the lab described by FILES (multi-document Kubernetes-shaped YAML).

    SIGINT or SIGTERM at any moment, up to the exit itself, leaves nothing built and a
    non-zero exit (130 or 143): see netlab.kernel.interrupts.
    """
    with interrupts.deferred() as guard:
        lab = topology.load(list(files), name_override=name)  # a bad file builds nothing
        if prometheus:
            lab = prometheus_addon.enable(lab)
        guard.check()
        prog, update = progress_bars()
        with prog:
            result = lifecycle.up(lab, update)
        s = result.summary
        err().print(f"lab [bold]{result.lab}[/] up in {result.seconds:.2f}s: {len(s['nodes'])} nodes, "
                    f"{len(s['pods'])} pods, {len(s['services'])} services. "
                    f"Try `netlab status {result.lab}`; remove with `netlab down {result.lab}`.")
        sys.stdout.flush()
        sys.stderr.flush()
        # The commit: from here signals stay pending and die with the process, so a
        # signal either came before this check (and the lab is removed) or never counted.
        interrupts.block()
        if guard.received is not None:
            lifecycle.down(result.lab)
            guard.check()
    # Exit now: interpreter teardown would be a window in which a signal is lost unseen.
    os._exit(0)


@click.command()
@click.argument("lab", required=False)
def down(lab: str | None) -> None:
    """Remove everything LAB owns: processes, namespaces, state."""
    lab = query.only_lab(lab)
    seconds = lifecycle.down(lab)
    err().print(f"lab [bold]{lab}[/] removed in {seconds:.2f}s")


@click.command()
@click.argument("lab", required=False)
@click.option("--all", "everything", is_flag=True, help="Also remove labs that are running fine.")
def clean(lab: str | None, everything: bool) -> None:
    """Remove the leftovers of crashed labs: LAB only when given (never anything netlab does not own)."""
    removed = lifecycle.clean(lab, everything)
    err().print(f"removed: {', '.join(removed)}" if removed else "nothing to clean")


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """The labs on this machine."""
    labs = query.list_labs()
    if as_json:
        out().print_json(json.dumps(labs))
        return
    if not labs:
        err().print("no labs")
        return
    t = Table("lab", "status", "restarts", "nodes", "pods", "files")
    for lab in labs:
        state = lab["status"] + (f" (run `netlab clean {lab['name']}`)" if lab["status"] == "crashed" else "")
        t.add_row(lab["name"], state, str(lab["restarts"]), str(lab["nodes"]), str(lab["pods"]),
                  " ".join(lab["files"]))
    out().print(t)


@click.command()
@click.argument("lab", required=False)
@click.option("--json", "as_json", is_flag=True, help="The stable shape documented in docs/json.md.")
def status(lab: str | None, as_json: bool) -> None:
    """Nodes, pods (IP, node, netns) and services (VIPs) of LAB."""
    record = query.record_of(query.only_lab(lab))
    s = query.status(record)
    if as_json:
        out().print_json(json.dumps(s))
        return
    o = out()
    o.print(f"lab [bold]{record.lab}[/] ({s['status']}), DNS {s['dns']}")
    t = Table("node", "fabric IP", "pod CIDR", "netns", title="nodes")
    for n in s["nodes"]:
        t.add_row(n["name"], n["ip"], n["podCIDR"], n["netns"])
    o.print(t)
    t = Table("pod", "IP", "node", "netns", title="pods")
    for p in s["pods"]:
        t.add_row(f"{p['namespace']}/{p['name']}", p["ip"], p["node"], p["netns"])
    o.print(t)
    t = Table("service", "cluster IP", "ports", "endpoints", title="services")
    for svc in s["services"]:
        ports = ", ".join(f"{p['name'] or ''}:{p['port']}/{p['protocol']}" for p in svc["ports"])
        eps = ", ".join(sorted({f"{e['ip']}:{e['port']}" for p in svc["ports"] for e in p["endpoints"]}))
        t.add_row(f"{svc['namespace']}/{svc['name']}", svc["clusterIP"], ports, eps or "(none)")
    o.print(t)
    t = Table("process", "pid", "state", "restarts", title="processes")
    for p in s["processes"]:
        t.add_row(p["name"], str(p["pid"]), p["state"], str(p["restarts"]))
    o.print(t)
    for p in s["processes"]:
        if p["state"] != "running":
            err().print(f"[yellow]warning:[/] process {p['name']} (pid {p['pid']}) is {p['state']}; "
                        f"see {p['log']}")


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("lab")
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec(lab: str, pod: str, command: tuple[str, ...]) -> None:  # noqa: A001 - CLI verb
    """Run COMMAND inside POD (ns/name or a unique name), with the pod's resolv.conf."""
    from netlab.kernel.processes import run_in

    if command and command[0] == "--":
        command = command[1:]
    if not command:
        fail("give a command after --, e.g. netlab exec LAB POD -- curl http://svc:80/")
    lifecycle.require_root()
    record = query.record_of(lab)
    p = query.find_pod(record, pod)
    query.ensure_lab_netns(record)
    try:
        res = run_in(p["netns"], list(command), query.pod_resolv_conf(record, p))
    except FileNotFoundError:
        fail(f"command not found: {command[0]}", 127)
    sys.exit(res.returncode)


COMMANDS: list[click.Command] = [up, down, clean, list_, status, exec]
