"""`netlab up|down|clean|list|status|exec`: a lab's life on this machine."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
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

    SIGINT or SIGTERM at any moment up to the commit (the success line printed, just
    before the exit) leaves nothing built and a non-zero exit (130 or 143); one after it
    no longer counts, so exit 0 always means the lab is up: see netlab.kernel.interrupts.
    """
    with interrupts.deferred() as guard:
        lab = topology.load(list(files), name_override=name)  # a bad file builds nothing
        for note in lab.notes:  # kinds accepted and ignored (ConfigMap, Secret): one line each
            err().print(f"note: {note}", highlight=False)
        if prometheus:
            lab = prometheus_addon.enable(lab)
        guard.check()
        prog, update = progress_bars()
        with prog:
            result = lifecycle.up(lab, update)
        s = result.summary
        err().print(f"lab [bold]{result.lab}[/] up in {result.seconds:.2f}s: {_count(len(s['nodes']), 'node')}, "
                    f"{_count(len(s['pods']), 'pod')}, {_count(len(s['services']), 'service')}. "
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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


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
@click.option("-n", "--namespace", help="Only pods, services and policies of this namespace.")
@click.option("-l", "--selector", help="Only pods, services and policies whose labels match, "
              "in kubectl's syntax: app=ratings,version in (v1,v2),!canary")
@click.option("-o", "--output", type=click.Choice(["wide"]), help="wide: more columns (netns, service account, "
              "waypoint, images, labels, endpoints by pod, process logs).")
@click.option("--json", "as_json", is_flag=True, help="The stable shape documented in docs/json.md.")
def status(lab: str | None, namespace: str | None, selector: str | None, output: str | None,
           as_json: bool) -> None:
    """Nodes; pods with their mesh mode and why; services; policies; processes with health."""
    record = query.record_of(query.only_lab(lab))
    s = query.status(record, namespace, selector)
    if as_json:
        out().print_json(json.dumps(s))
        return
    render_status(s, wide=output == "wide")
    for p in s["processes"]:
        if p["state"] != "running":
            why = f" ({p['lastExit']})" if p.get("lastExit") else ""
            err().print(f"[yellow]warning:[/] process {p['name']} (pid {p['pid']}) is {p['state']}{why}; "
                        f"see {p['log']}", highlight=False)


MESH_STYLE = {"ambient": "green", "sidecar": "cyan", "waypoint": "magenta", "none": "dim"}
STATE_STYLE = {"running": "green", "starting": "yellow", "down": "bold red", "exited": "red"}


def render_status(s: dict[str, Any], wide: bool = False, o: Console | None = None) -> None:
    """The tables of `netlab status`, from the `status --json` shape."""
    o = o or out()
    o.print(f"lab [bold]{escape(s['lab'])}[/] ({s['status']}), DNS {s['dns']}", highlight=False)
    t = Table("node", "fabric IP", "pod CIDR", *(["netns"] if wide else []), title="nodes")
    for n in s["nodes"]:
        t.add_row(n["name"], n["ip"], n["podCIDR"], *([n["netns"]] if wide else []))
    o.print(t)
    cols = ["pod", "ready", "restarts", "IP", "node", "mesh", "why"]
    if wide:
        cols += ["service account", "waypoint", "netns", "images", "labels"]
    t = Table(*cols, title="pods")
    for p in s["pods"]:
        mesh = p.get("mesh") or {"mode": p.get("mode") or "none", "reason": ""}
        row = [f"{p['namespace']}/{p['name']}", p.get("ready", ""), str(p.get("restarts", "")), p["ip"],
               p["node"], f"[{MESH_STYLE.get(mesh['mode'], '')}]{mesh['mode']}[/]", escape(mesh["reason"])]
        if wide:
            row += [p["serviceAccount"], p.get("waypoint") or "", p["netns"], ", ".join(p["images"]),
                    escape(",".join(f"{k}={v}" for k, v in sorted(p["labels"].items())))]
        t.add_row(*row)
    o.print(t)
    t = Table("service", "cluster IP", "ports", "endpoints", *(["waypoint", "FQDN"] if wide else []),
              title="services")
    for svc in s["services"]:
        ports = ", ".join(f"{p['name'] or ''}:{p['port']}/{p['protocol']}" for p in svc["ports"])
        if wide:
            eps = ", ".join(sorted({f"{e['pod']} {e['ip']}:{e['port']}" for p in svc["ports"]
                                    for e in p["endpoints"]}))
        else:
            eps = ", ".join(sorted({f"{e['ip']}:{e['port']}" for p in svc["ports"] for e in p["endpoints"]}))
        t.add_row(f"{svc['namespace']}/{svc['name']}", svc["clusterIP"], ports, eps or "(none)",
                  *([svc.get("waypoint") or "", svc["fqdn"]] if wide else []))
    o.print(t)
    if s.get("policies"):
        t = Table("namespace", "policy", "kind", "what", title="policies")
        for pol in sorted(s["policies"], key=lambda p: (p["namespace"], p["kind"], p["name"])):
            t.add_row(pol["namespace"], pol["name"], pol["kind"], escape(pol["summary"]))
        o.print(t)
    else:
        o.print("policies: none (every meshed pod is PERMISSIVE and allows all)", highlight=False)
    cols = ["process", "state", "restarts", "last exit", "pid"] + (["netns", "log"] if wide else [])
    t = Table(*cols, title="processes")
    for p in s["processes"]:
        state = f"[{STATE_STYLE.get(p['state'], '')}]{p['state']}[/]"
        t.add_row(p["name"], state, str(p["restarts"]), p.get("lastExit") or "", str(p["pid"]),
                  *([p["netns"], p["log"]] if wide else []))
    o.print(t)


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
