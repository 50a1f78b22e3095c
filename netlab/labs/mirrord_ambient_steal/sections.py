"""The lab's report sections: the flow as a sequence diagram, and the evidence behind it.

Each packet is drawn from the lane of the process whose socket sent it, read from the
kernel: conntrack's reply tuple names the socket behind a NATed packet (the agent's
SYN-ACK leaves as pod:9080, but was sent by 127.0.0.1:39080), the listening sockets
name the process holding each port, and the proxy mark names ztunnel's own sockets.
Nothing is placed by what a process logged.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from netlab import mesh
from netlab.labs.framework import VariantResult
from netlab.labs.sections import Section, Sequence as Diagram, Step, Text, collapse
from netlab.observe.witness.match import describe
from netlab.observe.witness.sockets import Endpoint, through_nat

CLIENT, APP, AGENT = "client pod", "app :9080", "agent"
LANES = (CLIENT, "ztunnel node-1", "ztunnel node-2", APP, AGENT)
DECIDING_RULE = "! -d 127.0.0.1/32 -o lo -j ACCEPT"
FLAGS = {"S": "SYN", "SA": "SYN-ACK", "R": "RST", "RA": "RST", "FA": "FIN"}


def _lane_of(process: str | None) -> str | None:
    if not process:
        return None
    if process.startswith("ztunnel/"):
        return "ztunnel " + process.split("/", 1)[1]
    if process == "steal-agent":
        return AGENT
    if process.startswith("app/shop/target"):
        return APP
    return process


class _Lanes:
    """Which lane a socket belongs to, from the kernel's view of this variant."""

    def __init__(self, ev: dict[str, Any]) -> None:
        self.listeners = {(x["netns"], x["port"]): _lane_of(x.get("process"))
                          for x in ev.get("listeners", [])}
        self.node_of = {p["netns"]: p["node"] for p in ev["pods"].values()}
        self.netns_of = {p["ip"]: p["netns"] for p in ev["pods"].values()}
        self.client_ns = ev["pods"]["client"]["netns"]
        self.initiators: dict[tuple[str, int], str] = {}

    def sender(self, e: dict[str, Any], end: Endpoint) -> str:
        netns, addr, port = end
        lane = self.listeners.get((netns, port)) or self.initiators.get((addr, port))
        if lane is None:
            proxy = (e.get("mark") or 0) & mesh.PROXY_MARK_MASK == mesh.PROXY_MARK
            lane = (f"ztunnel {self.node_of.get(netns, '?')}" if proxy
                    else CLIENT if netns == self.client_ns else APP)
        if "S" in (e.get("tcp_flags") or "") and "A" not in e["tcp_flags"]:
            self.initiators[(addr, port)] = lane  # who opened it: its replies go back there
        return lane

    def receiver(self, end: Endpoint) -> str:
        netns, addr, port = end
        netns = self.netns_of.get(addr, netns)  # a pod's address: that pod's sockets
        return (self.listeners.get((netns, port)) or self.initiators.get((addr, port))
                or ("?" if netns != self.client_ns else CLIENT))


def _packet(e: dict[str, Any], cts: list[dict[str, Any]], lanes: _Lanes,
            hbone: int) -> Step | None:
    flags = FLAGS.get(e.get("tcp_flags") or "")
    if flags is None:
        return None  # bare ACKs and data add rows, not insight
    sent_by, meant_for = through_nat(e, cts)
    src, dst = lanes.sender(e, sent_by), lanes.receiver(meant_for)
    label = f"{flags} → {e['daddr']}:{e['dport']}"
    original = next((c for c in cts if (c.get("extra") or {}).get("reply", {}).get("saddr")
                     == e["daddr"] and c["extra"]["reply"].get("sport") == e["dport"]
                     and (c["daddr"], c["dport"]) != (e["daddr"], e["dport"])
                     and (c["saddr"], c["sport"]) == (e["saddr"], e["sport"])), None)
    if original is not None:
        label = f"{flags} for {original['daddr']}:{original['dport']}, REDIRECTed to " \
                f"{e['daddr']}:{e['dport']}"
    elif meant_for[1:] != (e["daddr"], e["dport"]):
        label += f", to be NATed to {meant_for[1]}:{meant_for[2]}"
    if sent_by[1:] != (e["saddr"], e["sport"]):
        label = f"{flags} from {sent_by[1]}:{sent_by[2]} (leaves as {e['saddr']}:{e['sport']})"
    if hbone in (e.get("dport"), e.get("sport")):
        label = "HBONE (mTLS) " + label
    return Step(src, dst, label)


def _conntrack(e: dict[str, Any], lanes: _Lanes) -> Step | None:
    reply = (e.get("extra") or {}).get("reply") or {}
    if (reply.get("saddr"), reply.get("sport")) == (e.get("daddr"), e.get("dport")):
        return None  # not NATed: nothing to show beside the packets
    lane = lanes.receiver((e["netns"], reply.get("saddr"), reply.get("sport")))
    return Step(lane, lane, f"conntrack: {e.get('saddr')}:{e.get('sport')} → {e.get('daddr')}:"
                f"{e.get('dport')} answered by {reply.get('saddr')}:{reply.get('sport')}", "nat")


def flow(ev: dict[str, Any]) -> list[Step]:
    """The variant's packets, NAT decisions and drops, each in the lane that did it."""
    pod_ns = {p["netns"] for p in ev["pods"].values()}
    cts = list(ev.get("conntrack", []))
    lanes = _Lanes(ev)
    ports = ev["ports"]
    steps: list[Step] = []
    for e in ev.get("events", []):
        s: Step | None = None
        if e["source"] == "bpf" and e["kind"] == "tx" and e.get("netns") in pod_ns:
            s = _packet(e, cts, lanes, ports["hbone"])  # each packet once, where it is sent
        elif e["source"] == "conntrack" and e["kind"] == "ct_new" and \
                e.get("netns") == ev["pods"]["target"]["netns"]:
            s = _conntrack(e, lanes)
        elif e["kind"] == "drop" and e.get("dport") in ports.values():
            lane = lanes.receiver((e.get("netns") or "", e.get("daddr"), e.get("dport")))
            s = Step(lane, lane, f"✕ kfree_skb {e.get('reason')} "
                     f"{(e.get('extra') or {}).get('location', '')}".strip(), "drop")
        if s is not None:
            steps.append(s)
    c = ev.get("counters", {})
    if c.get("TcpExtListenDrops", 0) > 0:
        steps.append(Step(AGENT, AGENT, f"✕ SYN dropped at the listener: ListenDrops "
                          f"+{c['TcpExtListenDrops']}, OutNoRoutes +{c.get('IpOutNoRoutes', 0)} "
                          "(no route for the SYN-ACK from 127.0.0.1)", "drop"))
    steps.append(Step(CLIENT, CLIENT, _result(ev.get("client", {})), "result"))
    return collapse(steps)


def _result(client: dict[str, Any]) -> str:
    if client.get("exit_code") != 0:
        return f"curl exit {client.get('exit_code')}: {client.get('stderr', '')}"
    if "stolen-by-netlab-agent" in client.get("stdout", ""):
        return "the client gets the AGENT's answer (stolen)"
    return "the client gets the APP's answer (not stolen)"


def _payload(text: str) -> str:
    """Readable bytes as they are; ciphertext (HBONE's TLS) named, not dumped."""
    readable = sum(c.isprintable() or c in "\r\n" for c in text)
    if text and readable / len(text) > 0.95:
        return repr(text)
    return "not readable (TLS record)" if text[:1] in ("\x16", "\x17", "\x14") else \
        "not readable (binary)"


def sections(r: VariantResult) -> Sequence[Section]:
    ev = r.evidence
    if "pods" not in ev:
        return ()  # the variant failed before the instance was up: nothing was observed
    client = ev.get("client") or {}
    ipt = (ev.get("iptables") or {}).get("excerpt", [])
    agent = ev.get("agent") or {}
    return [
        Diagram("Flow", LANES, tuple(flow(ev)),
                "Each packet is drawn from the process whose socket sent it (conntrack's "
                "reply tuple un-NATs replies; listening sockets name their process)."),
        Text("Client", (f"$ {' '.join(client.get('argv', []))}",
                        f"exit {client.get('exit_code')}, HTTP {client.get('http_code') or '-'},"
                        f" {client.get('seconds')} s", *client.get("stdout", "").splitlines(),
                        *client.get("stderr", "").splitlines())),
        Text("iptables-save -t nat (target pod, while the agent runs)", tuple(ipt),
             {DECIDING_RULE: "the deciding rule: ACCEPT ends nat OUTPUT for ztunnel's "
                             "connection to the app, so no MIRRORD_OUTPUT jump after it runs"}),
        Text("conntrack: new entries", tuple(describe(c) for c in ev.get("conntrack", []))),
        Text("kernel drops (skb:kfree_skb)", tuple(describe(d) for d in ev.get("drops", []))),
        Text("SNMP counters in the target pod during the request",
             tuple(f"{k} +{v}" for k, v in (ev.get("counters") or {}).items() if v)),
        Text("Listening sockets and their processes",
             tuple(f"[{x['netns']}] {x['addr']}:{x['port']} {x.get('process') or '(not the lab)'}"
                   for x in ev.get("listeners", []))),
        Text("On node-2's link (AF_PACKET, segments with a payload)",
             tuple(f"{s['saddr']}:{s['sport']} → {s['daddr']}:{s['dport']} {s['flags']} "
                   f"{s['bytes']} B: {_payload(s['payload'])}"
                   for s in ev.get("wire", {}).get("samples", []))),
        Text("The agent's log (shown, judged only for its warning and mirror copies)",
             tuple([*agent.get("warnings", []),
                    *(json.dumps(x, sort_keys=True) for x in agent.get("log", []))])),
    ]
