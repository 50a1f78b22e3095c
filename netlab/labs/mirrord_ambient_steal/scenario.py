"""One variant on the real kernel: build, start the agent, send a request, collect, stop.

What is judged comes from the kernel and the real client only: curl's exit code and
body, BPF/conntrack events, AF_PACKET copies from node-2's link, iptables-save and
sysctls read back, and the netns' SNMP counters. The agent's log is kept for the
report (and for mirror mode's copy), never as proof that a steal worked.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any, Callable

from netlab import topology
from netlab.kernel import netns as nsmod
from netlab.kernel import lifecycle, processes, query
from netlab.kernel.apply import wait_signalled
from netlab.kernel.ownership import LabRecord
from netlab.labs.framework import Evidence, Variant
from netlab.labs.mirrord_ambient_steal import probes
from netlab.labs.mirrord_ambient_steal.sequence import LANES, sequence
from netlab.labs.mirrord_ambient_steal.topology_patch import patched
from netlab.plan import naming
from netlab.readiness import ReadyPipe

APP_PORT = 9080
AGENT_PORT = 39080
AGENT_GID = 7777
HBONE_PORT = 15008
PORTS = {APP_PORT, AGENT_PORT, HBONE_PORT, 15001, 15006}
CURL_TIMEOUT = 3
READY_TIMEOUT = 15.0


def run(variant: Variant, name: str, progress: Callable[[str], None]) -> Evidence:
    p = variant.params
    progress(f"{variant.name}: building lab instance {name}")
    topo_dir = tempfile.mkdtemp(prefix=f"netlab-{name}-")
    path = os.path.join(topo_dir, "topology.yaml")
    with open(path, "w") as f:
        f.write(patched(name, p["istio"], p["ambient"], p.get("target_labels")))
    up = lifecycle.up(topology.load([path], name_override=name))
    record = query.record_of(name)
    target = query.find_pod(record, "shop/target")
    client = query.find_pod(record, p["client"])
    node2 = next(n for n in record.summary["nodes"] if n["name"] == target["node"])
    marker = f"/netlab-probe-{name}"
    ev: Evidence = {"instance": name, "istio": p["istio"], "ambient": p["ambient"],
                    "up_seconds": round(up.seconds, 2),
                    "pods": {"client": _pod(client), "target": _pod(target)},
                    "node_link": {"netns": node2["netns"], "ifname": naming.NODE_IFNAME},
                    "ports": {"app": APP_PORT, "agent": AGENT_PORT, "hbone": HBONE_PORT},
                    "mesh": {"client": p["ambient"] and client["namespace"] == "shop",
                             "target": p["ambient"] and (p.get("target_labels") or {}).get(
                                 "istio.io/dataplane-mode") != "none"}}
    agent = None
    if p.get("agent"):
        progress(f"{variant.name}: starting the agent in {target['namespace']}/{target['name']}")
        agent = _start_agent(record, target["netns"], p["agent"])
    ev["iptables"] = probes.nat_excerpt(probes.iptables_save(target["netns"]))
    ev["sysctl"] = {"net.ipv4.conf.all.route_localnet":
                    probes.sysctl(target["netns"], "net.ipv4.conf.all.route_localnet")}
    try:
        progress(f"{variant.name}: curl from {client['namespace']}/{client['name']} (traced)")
        ev.update(_traffic(record, client, target, node2["netns"], marker))
    finally:
        if agent is not None:
            ev["agent"] = _stop_agent(agent)
            ev["iptables_after_agent"] = probes.nat_excerpt(probes.iptables_save(target["netns"]))
            ev["sysctl_after_agent"] = {"net.ipv4.conf.all.route_localnet":
                                        probes.sysctl(target["netns"],
                                                      "net.ipv4.conf.all.route_localnet")}
    ev["sequence"] = sequence(ev)
    ev["lanes"] = list(LANES)
    return ev


def _pod(p: dict[str, Any]) -> dict[str, Any]:
    return {k: p[k] for k in ("namespace", "name", "ip", "node", "netns")}


def _start_agent(record: LabRecord, netns: str, opts: dict[str, Any]) -> dict[str, Any]:
    argv = [sys.executable, "-m", "netlab.dataplane.steal", "--mode", opts["mode"],
            "--port", str(APP_PORT), "--agent-port", str(AGENT_PORT),
            "--agent-gid", str(AGENT_GID)]
    argv += ["--ambient-aware"] if opts.get("ambient_aware") else []
    argv += ["--privileged"] if opts.get("privileged") else []
    logs = os.path.join(record.dir, "logs")
    os.makedirs(logs, exist_ok=True)
    log = os.path.join(logs, "steal-agent.log")
    pipe = ReadyPipe()
    rec = processes.spawn("steal-agent", netns, argv, log, gid=AGENT_GID, ready=pipe)
    record.processes.append(rec)  # `netlab down` (and --keep users) stop it too
    record.save()
    # It says ready once it listens and its rules are in (steal), or its sniffer runs.
    wait_signalled(pipe, rec, READY_TIMEOUT)
    return {"pid": rec.pid, "log": log, "argv": argv[1:], "gid": AGENT_GID, "rec": rec}


def _stop_agent(agent: dict[str, Any]) -> dict[str, Any]:
    processes.stop([agent["pid"]], grace=5.0)
    lines = [json.loads(x) for x in _read(agent["log"]).splitlines() if x.startswith("{")]
    warnings = [x for x in _read(agent["log"]).splitlines() if x.startswith("WARNING")]
    return {"argv": agent["argv"], "gid": agent["gid"], "log": lines, "warnings": warnings,
            "mirrored": [x for x in lines if x.get("event") == "mirror"]}


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _traffic(record: LabRecord, client: dict[str, Any], target: dict[str, Any],
             node_netns: str, marker: str) -> Evidence:
    from netlab.dataplane.steal.sniff import Sniffer, open_socket
    from netlab.observe.tracer import Tracer

    scope = {n: os.stat(nsmod.path(n)).st_ino
             for n in (client["netns"], target["netns"], node_netns)}
    with nsmod.entered(node_netns):
        sock = open_socket()
    sniffer = Sniffer(sock, [APP_PORT, HBONE_PORT]).start()
    before = probes.snmp(target["netns"])
    url = f"http://target.shop:{APP_PORT}{marker}"
    argv = ["curl", "-sS", "-m", str(CURL_TIMEOUT), "-w", "\\nhttp_code=%{http_code}", url]
    tracer = Tracer(scope, collectors=("bpf", "conntrack"), strict=False)
    try:
        with tracer:
            started = time.monotonic()
            res = processes.run_in(client["netns"], argv, query.pod_resolv_conf(record, client),
                                   capture_output=True, text=True, timeout=CURL_TIMEOUT + 10)
            took = time.monotonic() - started
            # Conntrack and perf buffers deliver asynchronously: wait for the target's
            # conntrack entry (bounded) instead of sleeping.
            tracer.wait_for(lambda evs: any(e.source == "conntrack" and e.netns == target["netns"]
                                            for e in evs), timeout=1.0)
    finally:
        segments = sniffer.stop()
    after = probes.snmp(target["netns"])
    stdout, _, code = res.stdout.rpartition("\nhttp_code=")
    events = [json.loads(e.to_json()) for e in tracer.events if _relevant(e)]
    wire = [s for s in segments if s.ifname == naming.NODE_IFNAME]
    return {
        "client": {"argv": argv, "exit_code": res.returncode, "stdout": stdout.strip(),
                   "stderr": res.stderr.strip(), "http_code": code.strip(),
                   "seconds": round(took, 2)},
        "collectors": {"skipped": tracer.skipped, "counters": tracer.counters},
        "events": events,
        "drops": [e for e in events if e["kind"] == "drop"],
        "conntrack": [e for e in events if e["source"] == "conntrack" and e["kind"] == "ct_new"],
        "counters": probes.delta(before, after),
        "wire": {
            "segments": len(wire),
            "hbone_to_target": sum(1 for s in wire if s.dport == HBONE_PORT
                                   and s.daddr == target["ip"]),
            "plaintext_to_target": sum(1 for s in wire if s.dport == APP_PORT
                                       and s.daddr == target["ip"]),
            "marker_seen": any(marker.encode() in s.payload for s in wire),
            "marker": marker,
            "samples": [s.to_dict() for s in wire if s.payload][:6],
        },
    }


def _relevant(e: Any) -> bool:
    if e.kind == "drop":  # drops without a TCP/UDP tuple (IPv6 multicast, purges) are noise here
        return e.proto in ("tcp", "udp")
    return e.proto == "tcp" and bool({e.sport, e.dport} & PORTS) or bool(
        {(e.extra.get("reply") or {}).get("sport")} & PORTS)
