"""Lab lifecycle: parse → plan → apply, with rollback; down; clean; status.

The CLI is a thin shell over these functions, and so are the tests and labs.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from netlab import topology
from netlab.errors import KernelError, LabNotFound, NetlabError
from netlab.kernel import netns as nsmod
from netlab.kernel.apply import Applier, Progress, destroy
from netlab.kernel.ownership import LabRecord, all_labs
from netlab.model import Lab
from netlab.plan import naming
from netlab.plan.planner import PlanOptions, plan
from netlab.plan.state import DesiredState


@dataclass
class UpResult:
    lab: str
    seconds: float
    summary: dict[str, Any]


def require_root() -> None:
    if os.geteuid() != 0:
        raise NetlabError("netlab builds network namespaces and needs root: run it with sudo")


def load_and_plan(files: list[str], name: str | None = None,
                  start_processes: bool = True) -> tuple[Lab, DesiredState]:
    lab = topology.load(files, name_override=name)
    return lab, plan(lab, PlanOptions(python=sys.executable, start_processes=start_processes))


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM during `up` rolls back just like Ctrl-C does."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def up(files: list[str], name: str | None = None, progress: Progress | None = None,
       start_processes: bool = True) -> UpResult:
    require_root()
    lab, state = load_and_plan(files, name, start_processes)  # pure: bad input builds nothing
    return up_planned(lab, state, progress)


def up_planned(lab: Lab, state: DesiredState, progress: Progress | None = None) -> UpResult:
    existing = LabRecord.load(lab.name)
    if existing is not None:
        hint = ("it is still being built by pid %d" % existing.builder_pid
                if existing.status == "building" and existing.builder_pid_alive()
                else f"remove it first with `netlab down {lab.name}`")
        raise NetlabError(f"a lab named {lab.name!r} already exists ({existing.status}); {hint}, "
                          "or pick another name with --name")
    clash = [n.name for n in state.netns if nsmod.exists(n.name)]
    if clash:
        raise NetlabError(f"network namespace {clash[0]} exists but no lab {lab.name!r} owns it; "
                          "netlab will not touch it. Remove it yourself or use another --name")
    record = LabRecord.new(lab.name, [os.path.abspath(f) for f in lab.files])
    record.summary = summarize(state)
    record.save()
    started = time.perf_counter()
    with sigterm_as_interrupt():
        try:
            Applier(record, progress or (lambda *a: None)).apply(state)
        except BaseException:
            # Ctrl-C, SIGTERM or any failure: leave nothing behind, then say why.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                destroy(record)
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            raise
    record.status = "ready"
    record.save()
    return UpResult(lab.name, time.perf_counter() - started, record.summary)


def down(lab: str) -> float:
    require_root()
    record = LabRecord.load(lab)
    if record is None:
        raise LabNotFound(f"no lab named {lab!r}; `netlab list` shows the labs on this machine")
    if record.status == "building" and record.builder_pid_alive():
        raise NetlabError(f"lab {lab!r} is still being built by pid {record.builder_pid}; "
                          "interrupt that `netlab up` (it rolls back) instead")
    started = time.perf_counter()
    destroy(record)
    return time.perf_counter() - started


def clean(everything: bool = False) -> list[str]:
    """Remove labs whose builder died mid-build (or all labs with `everything`)."""
    require_root()
    removed = []
    for name in all_labs():
        record = LabRecord.load(name)
        if record is None:
            continue
        crashed = record.status != "ready" and not record.builder_pid_alive()
        if everything or crashed:
            destroy(record)
            removed.append(name)
    return removed


def list_labs() -> list[dict[str, Any]]:
    out = []
    for name in all_labs():
        r = LabRecord.load(name)
        if r is None:
            continue
        status = r.status
        if status == "building" and not r.builder_pid_alive():
            status = "crashed (run `netlab clean`)"
        out.append({"name": name, "status": status, "created": r.created,
                    "nodes": len(r.summary.get("nodes", [])), "pods": len(r.summary.get("pods", [])),
                    "files": r.files})
    return out


def record_of(lab: str) -> LabRecord:
    r = LabRecord.load(lab)
    if r is None:
        raise LabNotFound(f"no lab named {lab!r}; `netlab list` shows the labs on this machine")
    return r


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


def summarize(state: DesiredState) -> dict[str, Any]:
    """The stable `status --json` shape (docs/json.md)."""
    return {
        "lab": state.lab,
        "dns": state.dns_ip,
        "nodes": [{"name": n.name, "netns": n.netns, "ip": n.ip, "podCIDR": n.pod_cidr}
                  for n in state.nodes],
        "pods": [{"namespace": p.namespace, "name": p.name, "deployment": p.deployment,
                  "node": p.node, "ip": p.ip, "netns": p.netns, "serviceAccount": p.service_account,
                  "labels": p.labels, "images": list(p.images)} for p in state.pods],
        "services": [{"namespace": s.namespace, "name": s.name, "clusterIP": s.vip, "fqdn": s.fqdn,
                      "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol,
                                 "appProtocol": p.app_protocol,
                                 "endpoints": [asdict(e) for e in p.endpoints]} for p in s.ports]}
                     for s in state.services],
    }


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
    from netlab.plan.planner import resolv_conf
    path = os.path.join(record.dir, f"exec-{pod['namespace']}.resolv.conf")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(resolv_conf(pod["namespace"], record.summary.get("dns", "")))
    return path


def ensure_lab_netns(record: LabRecord) -> None:
    missing = [n for n in record.netns if not nsmod.exists(n)]
    if missing:
        raise KernelError(f"lab {record.lab} is damaged: {missing[0]} is gone; `netlab down {record.lab}`")


__all__ = ["up", "down", "clean", "list_labs", "record_of", "find_pod", "naming"]


def processes_alive(p: Any) -> bool:
    from netlab.kernel.processes import is_ours
    return is_ours(p)
