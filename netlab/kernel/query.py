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
from netlab.model import Lab
from netlab.plan.describe import NONE, membership, policies
from netlab.plan.state import DesiredState
from netlab.topology import selector as label_selector

__all__ = ["record_of", "only_lab", "list_labs", "lab_state", "crashed", "summarize", "status", "filtered", "find_pod",
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
        last = supervised[p.name].last_exit if p.name in supervised else None
        out.append({"name": p.name, "pid": p.pid, "netns": p.netns, "log": p.log, "alive": alive,
                    "restarts": p.restarts, "state": state, "supervised": mine, "lastExit": last})
    return out


def summarize(state: DesiredState, lab: Lab | None = None) -> dict[str, Any]:
    """The stable `status --json` shape (docs/json.md), stored in the record at `up`.

    With the model (`lab`), each pod's mesh membership is told with its reason and the
    lab's policies are listed (netlab.plan.describe); a lab is fixed once up, so these
    words are written once, here, and read by every `status`."""
    members = {p.key: membership(lab, p) if lab is not None else (p.mode or NONE, "") for p in state.pods}
    svc_labels = {(s.namespace, s.name): dict(s.labels) for s in lab.services} if lab is not None else {}
    summary = {
        "lab": state.lab,
        "dns": state.dns_ip,
        "nodes": [{"name": n.name, "netns": n.netns, "ip": n.ip, "podCIDR": n.pod_cidr}
                  for n in state.nodes],
        "pods": [{"namespace": p.namespace, "name": p.name, "deployment": p.deployment,
                  "node": p.node, "ip": p.ip, "netns": p.netns, "serviceAccount": p.service_account,
                  "labels": p.labels, "images": list(p.images),
                  "mode": p.mode,
                  "mesh": {"mode": members[p.key][0], "reason": members[p.key][1]},
                  "waypoint": p.waypoint} for p in state.pods],
        "services": [{"namespace": s.namespace, "name": s.name, "clusterIP": s.vip, "fqdn": s.fqdn,
                      "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol,
                                 "appProtocol": p.app_protocol,
                                 "endpoints": [asdict(e) for e in p.endpoints]} for p in s.ports],
                      "labels": svc_labels.get((s.namespace, s.name), {}), "waypoint": s.waypoint}
                     for s in state.services],
        "policies": policies(lab) if lab is not None else [],
    }
    return summary


def status(record: LabRecord, namespace: str | None = None, selector: str | None = None) -> dict[str, Any]:
    """The summary plus what is true now: the lab's state and each process' state and restarts.

    Each pod also gets `ready` ("1/1": its processes running of all it has; a process is
    the pod's when it runs in the pod's netns) and `restarts`. `namespace` (-n) keeps the
    pods, services and policies of one namespace; `selector` (-l, kubectl's syntax) the
    pods, services and policies whose own labels match, as `kubectl get -l` does. Nodes and
    processes are lab-wide and always kept."""
    out = dict(record.summary)
    procs = process_states(record)
    out["status"] = lab_state(record, procs)
    out["processes"] = procs
    by_netns: dict[str, list[dict[str, Any]]] = {}
    for p in procs:
        by_netns.setdefault(p["netns"], []).append(p)
    pods = []
    for pod in out.get("pods", []):
        mine = by_netns.get(pod["netns"], [])
        pods.append({**pod, "ready": f"{sum(p['state'] == 'running' for p in mine)}/{len(mine)}",
                     "restarts": sum(p["restarts"] for p in mine)})
    out["pods"] = pods
    return filtered(out, namespace, selector)


def filtered(status: dict[str, Any], namespace: str | None = None, selector: str | None = None) -> dict[str, Any]:
    """`status` with only the pods, services and policies in `namespace` whose labels match `selector`."""
    match = label_selector.parse(selector).matches if selector else (lambda labels: True)
    out = dict(status)
    for key in ("pods", "services", "policies"):
        out[key] = [o for o in status.get(key, [])
                    if (namespace is None or o["namespace"] == namespace)
                    and match(o.get("labels") or {})]
    return out


def find_pod(record: LabRecord, ref: str) -> dict[str, Any]:
    """POD is `ns/name`, a unique pod name, or a single-replica deployment's name."""
    pods = record.summary.get("pods", [])
    if "/" in ref:
        ns, name = ref.split("/", 1)
        hits = [p for p in pods if p["namespace"] == ns and name in (p["name"], p["deployment"])]
        if len(hits) > 1:  # a pod named like another's deployment: the exact name wins
            hits = [p for p in hits if p["name"] == name] or hits
    else:
        hits = [p for p in pods if p["name"] == ref] or [p for p in pods if p["deployment"] == ref]
    if len(hits) == 1:
        return hits[0]
    names = ", ".join(f"{p['namespace']}/{p['name']}" for p in pods[:12]) or "none"
    if not hits:
        raise NetlabError(f"no pod {ref!r} in lab {record.lab}; pods: {names}"
                          + (", ..." if len(pods) > 12 else ""))
    raise NetlabError(f"{ref!r} is {len(hits)} pods in lab {record.lab}; pick one of: "
                      f"{', '.join(p['namespace'] + '/' + p['name'] for p in hits)}")


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
        if not chosen and _names_a_pod(record, component):
            pod = find_pod(record, component)  # a pod, named as `exec` names it: its processes
            chosen = [p for p in record.processes if p.netns == pod["netns"]]
            if not chosen:
                raise NetlabError(f"pod {pod['namespace']}/{pod['name']} runs no process "
                                  f"(an idle pod, e.g. netlab/sleep, has none); nothing to log")
    if not chosen:
        raise NetlabError(f"no process or pod {component!r} in lab {record.lab}; "
                          f"try a process ({', '.join(p.name for p in record.processes)}) "
                          "or a pod as `netlab status` names it (ns/name)")
    return [p.log for p in chosen]


def _names_a_pod(record: LabRecord, ref: str) -> bool:
    """`ref` is some pod's ns/name, name or deployment (possibly of several replicas)."""
    ns, _, name = ref.rpartition("/")
    return any((not ns or p["namespace"] == ns) and name in (p["name"], p["deployment"])
               for p in record.summary.get("pods", []))


def processes_named(record: LabRecord, prefix: str) -> list[ProcessRecord]:
    """The recorded processes whose name starts with `prefix` (e.g. every `ztunnel/`)."""
    return [p for p in record.processes if p.name.startswith(prefix)]
