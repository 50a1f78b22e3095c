"""One variant on the built instance: start the agent, send one traced request, read back.

What is judged comes from the kernel and the real client only: curl's exit code and
body, BPF and conntrack events, AF_PACKET copies from node-2's link, iptables-save and
sysctls read back, SNMP counters, and which process holds each listening socket. The
agent's log is kept for the report (and for mirror mode's copy, where the log *is* the
product), never as proof that a steal worked.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from netlab import mesh
from netlab.labs.context import Context, Helper, Pod
from netlab.labs.framework import Evidence
from netlab.observe.events import Event
from netlab.observe.tracer import Tracer
from netlab.observe.witness import iptables, snmp, sockets, sysctl
from netlab.observe.witness.wire import Wire
from netlab.plan import naming

APP_PORT = 9080
AGENT_PORT = 39080
AGENT_GID = 7777  # mirrord's OUTPUT chain skips the agent's gid
ROUTE_LOCALNET = "net.ipv4.conf.all.route_localnet"
COUNTERS = ("TcpExtListenDrops", "IpOutNoRoutes", "TcpExtTCPSynRetrans", "IpInReceives",
            "TcpActiveOpens", "TcpPassiveOpens")
PORTS = {APP_PORT, AGENT_PORT, mesh.HBONE_PORT, mesh.OUTBOUND_PORT, mesh.INBOUND_PORT}
CURL_TIMEOUT = 2  # fix-unprivileged hangs: the SYN dies within ms, 2 s shows the hang


def traffic(ctx: Context) -> Evidence:
    p = ctx.params
    target, client = ctx.pod("shop/target"), ctx.pod(p["client"])
    node = ctx.node(target["node"])
    client_node = ctx.node(client["node"])  # where a Service VIP is DNATed for a plain client
    ev: Evidence = {
        "pods": {"client": _pod(client), "target": _pod(target)},
        "node_link": {"netns": node["netns"], "ifname": naming.NODE_IFNAME},
        "ports": {"app": APP_PORT, "agent": AGENT_PORT, "hbone": mesh.HBONE_PORT,
                  "outbound": mesh.OUTBOUND_PORT},
    }
    agent = None
    if p.get("agent"):
        ctx.progress(f"starting the agent in {target['namespace']}/{target['name']}")
        agent = ctx.start("steal-agent", target, _agent_argv(p["agent"]), gid=AGENT_GID)
    ev["iptables"] = _nat(target["netns"])
    ev["sysctl"] = {ROUTE_LOCALNET: sysctl.read(target["netns"], ROUTE_LOCALNET)}
    try:
        ctx.progress(f"curl from {client['namespace']}/{client['name']} (traced)")
        ev.update(_request(ctx, client, target, node["netns"], client_node["netns"]))
    finally:
        if agent is not None:
            ev["agent"] = _agent_log(agent)
            ev["iptables_after_agent"] = _nat(target["netns"])
            ev["sysctl_after_agent"] = {ROUTE_LOCALNET: sysctl.read(target["netns"],
                                                                    ROUTE_LOCALNET)}
    return ev


def warm() -> None:
    """What every variant's traced request loads (Lab.warm): the compiled BPF program
    and scapy (the wire sniffer's decoder)."""
    from netlab.kernel import afpacket
    from netlab.observe.bpf.collector import preload

    preload()
    afpacket.preload()


def _pod(p: Pod) -> dict[str, Any]:
    return {k: p[k] for k in ("namespace", "name", "ip", "node", "netns")}


def _agent_argv(opts: dict[str, Any]) -> list[str]:
    argv = [sys.executable, "-m", "netlab.dataplane.steal", "--mode", opts["mode"],
            "--port", str(APP_PORT), "--agent-port", str(AGENT_PORT),
            "--agent-gid", str(AGENT_GID)]
    return (argv + (["--ambient-aware"] if opts.get("ambient_aware") else [])
            + (["--privileged"] if opts.get("privileged") else []))


def _agent_log(agent: Helper) -> dict[str, Any]:
    text = agent.stop()
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    return {"argv": agent.argv[1:], "gid": agent.gid, "log": lines,
            "warnings": [x for x in text.splitlines() if x.startswith("WARNING")],
            "mirrored": [x for x in lines if x.get("event") == "mirror"]}


def _nat(netns: str) -> dict[str, Any]:
    """The nat rules that decide the story, and where each OUTPUT jump sits (1-based)."""
    nat = iptables.table(iptables.save(netns), "nat")
    output = iptables.chain(nat, "OUTPUT")
    return {"nat_output": output, "output_positions": iptables.positions(output),
            "excerpt": iptables.excerpt(nat, ("OUTPUT", "PREROUTING", "ISTIO_OUTPUT",
                                              "MIRRORD_")),
            "mirrord_rules": sum("MIRRORD" in r for r in nat)}


def _request(ctx: Context, client: Pod, target: Pod, node_netns: str,
             client_node_netns: str) -> Evidence:
    marker = f"/netlab-probe-{ctx.instance}"
    argv = ["curl", "-sS", "-m", str(CURL_TIMEOUT), "-w", "\\nhttp_code=%{http_code}",
            f"http://target.shop:{APP_PORT}{marker}"]
    tracer = Tracer(ctx.scope(client["netns"], target["netns"], node_netns, client_node_netns),
                    collectors=("bpf", "conntrack"), strict=False)
    before = snmp.counters(target["netns"])
    with Wire(node_netns, [APP_PORT, mesh.HBONE_PORT], ifname=naming.NODE_IFNAME) as wire:
        with tracer:
            started = time.monotonic()
            res = ctx.exec(client, argv, timeout=CURL_TIMEOUT + 10)
            took = time.monotonic() - started
            # Conntrack and perf buffers deliver asynchronously: wait for the target's
            # conntrack entry (bounded) instead of sleeping.
            tracer.wait_for(lambda evs: any(e.source == "conntrack" and e.netns == target["netns"]
                                            for e in evs), timeout=1.0)
        # Who holds each listening socket, read while the agent still runs: the
        # sequence diagram names the sender of a packet by the socket that sent it.
        pids = ctx.pids()
        listening = [dict(x.to_dict(), process=ctx.process_name(x.pid))
                     for ns in (client["netns"], target["netns"])
                     for x in sockets.listeners(ns, pids)]
    stdout, _, code = res.stdout.rpartition("\nhttp_code=")
    events = [json.loads(e.to_json()) for e in tracer.events if _relevant(e)]
    return {
        "client": {"argv": argv, "exit_code": res.returncode, "stdout": stdout.strip(),
                   "stderr": res.stderr.strip(), "http_code": code.strip(),
                   "seconds": round(took, 2)},
        "collectors": {"skipped": tracer.skipped, "counters": tracer.counters},
        "events": events,
        "drops": [e for e in events if e["kind"] == "drop"],
        "conntrack": [e for e in events if e["source"] == "conntrack" and e["kind"] == "ct_new"],
        "counters": snmp.delta(before, snmp.counters(target["netns"]), COUNTERS),
        "listeners": listening,
        "wire": {
            "segments": len(wire.segments),
            "hbone_to_target": len(wire.to(target["ip"], mesh.HBONE_PORT)),
            "plaintext_to_target": len(wire.to(target["ip"], APP_PORT)),
            "marker_seen": bool(wire.carrying(marker.encode())),
            "marker": marker,
            "samples": [s.to_dict(payload_chars=4096) for s in wire.segments if s.payload],
        },
    }


def _relevant(e: Event) -> bool:
    if e.kind == "drop":  # drops without a TCP/UDP tuple (IPv6 multicast, purges) are noise here
        return e.proto in ("tcp", "udp")
    return e.proto == "tcp" and bool({e.sport, e.dport} & PORTS) or bool(
        {(e.extra.get("reply") or {}).get("sport")} & PORTS)
