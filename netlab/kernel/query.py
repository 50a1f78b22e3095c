"""Questions about labs that exist: which labs, their records, their pods, their logs.

Read-only over the ownership records under /run/netlab (kernel/ownership.py), so the
command line, the observers, the labs and the benches all answer "which pod is
`sleep`?" or "where is ztunnel's log?" the same way. The one write here is the pod's
resolv.conf file in the lab's own state directory, made on first use by `exec`.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from netlab.errors import KernelError, LabNotFound, NetlabError
from netlab.kernel import netns as nsmod
from netlab.kernel.ownership import SUPERVISOR, LabRecord, ProcessRecord, all_labs, read_supervision
from netlab.kernel.processes import is_ours
from netlab.plan.state import DesiredState

__all__ = ["record_of", "only_lab", "list_labs", "lab_state", "crashed", "summarize", "status", "find_pod",
           "pod_resolv_conf", "ensure_lab_netns", "netns_inodes", "log_files", "processes_named"]


def record_of(lab: str) -> LabRecord:
    record = LabRecord.load(lab)
    if record is None:
        raise LabNotFound(f"no lab named {lab!r}; `netlab list` shows the labs on this machine")
    return record


def only_lab(lab: str | None) -> str:
    """Commands default to the only lab there is, and say so when that's ambiguous."""
    if lab:
        return lab
    labs = all_labs()
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise LabNotFound("no lab is running; start one with `netlab up FILE`")
    raise NetlabError(f"several labs are running ({', '.join(labs)}); name one")


def list_labs() -> list[dict[str, Any]]:
    """One row per lab, its state told exactly as `status` tells it (`lab_state`)."""
    rows = []
    for name in all_labs():
        record = LabRecord.load(name)
        if record is None:
            continue
        procs = process_states(record)
        rows.append({"name": name, "status": lab_state(record, procs), "created": record.created,
                     "nodes": len(record.summary.get("nodes", [])),
                     "pods": len(record.summary.get("pods", [])), "files": record.files,
                     "restarts": sum(p["restarts"] for p in procs)})
    return rows


def crashed(record: LabRecord) -> bool:
    """Left half-made: not ready, and the `netlab up` (or `down`) working on it is gone."""
    return record.status != "ready" and not record.builder_pid_alive()


def lab_state(record: LabRecord, procs: list[dict[str, Any]] | None = None) -> str:
    """The one answer to "how is this lab?", for `status` and `list` alike.

    building | ready | degraded | crashed | destroying | failed. `degraded`: the lab was
    built, but a process it runs is down now (dead, or restarting and not ready yet),
    or its supervisor is gone so nothing would restart one.
    """
    if crashed(record):
        return "crashed"
    if record.status != "ready":
        return record.status
    procs = process_states(record) if procs is None else procs
    if any(p["supervised"] and p["state"] != "running" for p in procs):
        return "degraded"
    return "ready"


def process_states(record: LabRecord) -> list[dict[str, Any]]:
    """Each recorded process now: alive, restarts, state; `supervised` if the supervisor
    restarts it (the lab's own processes, and the supervisor itself).

    The supervisor's file may lag a death by a moment: a process it calls running whose
    pid is gone is down."""
    supervised = read_supervision(record.lab)
    out = []
    for p in record.processes:
        alive = is_ours(p)
        mine = p.name in supervised or p.name == SUPERVISOR
        state = p.state if mine else "running"
        if not alive and state in ("running", "starting"):
            state = "down" if mine else "exited"
        out.append({"name": p.name, "pid": p.pid, "netns": p.netns, "log": p.log, "alive": alive,
                    "restarts": p.restarts, "state": state, "supervised": mine})
    return out


def summarize(state: DesiredState) -> dict[str, Any]:
    """The stable `status --json` shape (docs/json.md), stored in the record at `up`."""
    return {
        "lab": state.lab,
        "dns": state.dns_ip,
        "nodes": [{"name": n.name, "netns": n.netns, "ip": n.ip, "podCIDR": n.pod_cidr}
                  for n in state.nodes],
        "pods": [{"namespace": p.namespace, "name": p.name, "deployment": p.deployment,
                  "node": p.node, "ip": p.ip, "netns": p.netns, "serviceAccount": p.service_account,
                  "labels": p.labels, "images": list(p.images),
                  "mode": p.mode} for p in state.pods],
        "services": [{"namespace": s.namespace, "name": s.name, "clusterIP": s.vip, "fqdn": s.fqdn,
                      "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol,
                                 "appProtocol": p.app_protocol,
                                 "endpoints": [asdict(e) for e in p.endpoints]} for p in s.ports]}
                     for s in state.services],
    }


def status(record: LabRecord) -> dict[str, Any]:
    """The summary plus what is true now: the lab's state and each process' state and restarts."""
    out = dict(record.summary)
    procs = process_states(record)
    out["status"] = lab_state(record, procs)
    out["processes"] = procs
    return out


def find_pod(record: LabRecord, ref: str) -> dict[str, Any]:
    """POD is `ns/name`, a unique pod name, or a single-replica deployment's name."""
    pods = record.summary.get("pods", [])
    if "/" in ref:
        ns, name = ref.split("/", 1)
        hits = [p for p in pods if p["namespace"] == ns and name in (p["name"], p["deployment"])]
        if len(hits) > 1:
            hits = [p for p in hits if p["name"] == name]
    else:
        hits = [p for p in pods if p["name"] == ref] or [p for p in pods if p["deployment"] == ref]
    if len(hits) == 1:
        return hits[0]
    names = ", ".join(f"{p['namespace']}/{p['name']}" for p in pods[:12]) or "none"
    if not hits:
        raise NetlabError(f"no pod {ref!r} in lab {record.lab}; pods: {names}")
    raise NetlabError(f"{ref!r} matches several pods in lab {record.lab} "
                      f"({', '.join(p['namespace'] + '/' + p['name'] for p in hits)}); use ns/name")


def pod_resolv_conf(record: LabRecord, pod: dict[str, Any]) -> str:
    """The resolv.conf a command run in POD sees: the pod's own, kept in the lab's state dir
    so it vanishes with the lab and nothing is written under the host's /etc."""
    from netlab.plan.planner import resolv_conf

    path = os.path.join(record.dir, f"exec-{pod['namespace']}.resolv.conf")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(resolv_conf(pod["namespace"], record.summary.get("dns", "")))
    return path


def ensure_lab_netns(record: LabRecord) -> None:
    """Refuse to run anything in a lab whose namespaces were removed behind its back."""
    missing = [n for n in record.netns if not nsmod.exists(n)]
    if missing:
        raise KernelError(f"lab {record.lab} is damaged: {missing[0]} is gone; `netlab down {record.lab}`")


def netns_inodes(record: LabRecord) -> dict[str, int]:
    """Every netns the lab owns, name -> inode: events and processes are matched by inode,
    which stays true after a namespace is renamed or unpinned, where a name does not."""
    ensure_lab_netns(record)
    return {name: nsmod.inode(name) for name in record.netns}


def log_files(record: LabRecord, component: str | None = None) -> list[str]:
    """Log files of `component`: a process name (`dns`), or a prefix (`ztunnel` for every
    node's ztunnel, as `ztunnel/NODE` names one); every process's without a component."""
    chosen = record.processes
    if component:
        prefix = component.rstrip("/") + "/"
        chosen = [p for p in chosen if p.name == component or p.name.startswith(prefix)]
    if not chosen:
        raise NetlabError(f"no process {component!r} in lab {record.lab}; "
                          f"try one of: {', '.join(p.name for p in record.processes)}")
    return [p.log for p in chosen]


def processes_named(record: LabRecord, prefix: str) -> list[ProcessRecord]:
    """The recorded processes whose name starts with `prefix` (e.g. every `ztunnel/`)."""
    return [p for p in record.processes if p.name.startswith(prefix)]
