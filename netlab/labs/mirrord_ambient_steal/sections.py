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

from netlab.labs.framework import VariantResult
from netlab.labs.sections import Section, Sequence as Diagram, Step, Text, collapse
from netlab.observe.witness.match import describe
from netlab.observe.witness.sockets import Senders

CLIENT, APP, AGENT = "client pod", "app :9080", "agent"
LANES = (CLIENT, "ztunnel node-1", "ztunnel node-2", APP, AGENT)
DECIDING_RULE = "! -d 127.0.0.1/32 -o lo -j ACCEPT"
FLAGS = {"S": "SYN", "SA": "SYN-ACK", "R": "RST", "RA": "RST", "FA": "FIN"}


def _lane(process: str | None, netns: str, ev: dict[str, Any]) -> str:
    """A process name → its lane; a socket no lab process holds is the pod's own workload."""
    if process is None:
        return CLIENT if netns == ev["pods"]["client"]["netns"] else APP
    if process.startswith("ztunnel/"):
        return "ztunnel " + process.split("/", 1)[1]
    return {"steal-agent": AGENT}.get(process, APP if process.startswith("app/shop/target")
                                      else process)


def _senders(ev: dict[str, Any]) -> Senders:
    pods = ev["pods"].values()
    return Senders(ev.get("listeners", []), ev.get("conntrack", []),
                   {p["ip"]: p["netns"] for p in pods},
                   {p["netns"]: f"ztunnel/{p['node']}" for p in pods})


def _packet(e: dict[str, Any], ev: dict[str, Any], senders: Senders) -> Step | None:
    flags = FLAGS.get(e.get("tcp_flags") or "")
    if flags is None:
        return None  # bare ACKs and data add rows, not insight
    who = senders.attribute(e)
    src, dst = _lane(who.sender, who.sent_by[0], ev), _lane(who.receiver, who.meant_for[0], ev)
    label = f"{flags} → {e['daddr']}:{e['dport']}"
    original = next((c for c in ev.get("conntrack", []) if _reply(c)[:2] == (e["daddr"], e["dport"])
                     and (c["saddr"], c["sport"]) == (e["saddr"], e["sport"])
                     and (c["daddr"], c["dport"]) != (e["daddr"], e["dport"])), None)
    if original is not None:
        label = f"{flags} for {original['daddr']}:{original['dport']}, REDIRECTed to " \
                f"{e['daddr']}:{e['dport']}"
    elif who.meant_for[1:] != (e["daddr"], e["dport"]):
        label += f", to be NATed to {who.meant_for[1]}:{who.meant_for[2]}"
    if who.sent_by[1:] != (e["saddr"], e["sport"]):
        label = f"{flags} from {who.sent_by[1]}:{who.sent_by[2]} (leaves as {e['saddr']}:{e['sport']})"
    if ev["ports"]["hbone"] in (e.get("dport"), e.get("sport")):
        label = "HBONE (mTLS) " + label
    return Step(src, dst, label)


def _reply(ct: dict[str, Any]) -> tuple[Any, Any]:
    reply = (ct.get("extra") or {}).get("reply") or {}
    return reply.get("saddr"), reply.get("sport")


def _conntrack(e: dict[str, Any], ev: dict[str, Any], senders: Senders) -> Step | None:
    addr, port = _reply(e)
    if (addr, port) == (e.get("daddr"), e.get("dport")):
        return None  # not NATed: nothing to show beside the packets
    lane = _lane(senders.listening.get((e["netns"], port)), e["netns"], ev)
    return Step(lane, lane, f"conntrack: {e.get('saddr')}:{e.get('sport')} → {e.get('daddr')}:"
                f"{e.get('dport')} answered by {addr}:{port}", "nat")


def flow(ev: dict[str, Any]) -> list[Step]:
    """The variant's packets, NAT decisions and drops, each in the lane that did it."""
    pod_ns = {p["netns"] for p in ev["pods"].values()}
    senders = _senders(ev)
    steps: list[Step | None] = []
    for e in ev.get("events", []):
        if e["source"] == "bpf" and e["kind"] == "tx" and e.get("netns") in pod_ns:
            steps.append(_packet(e, ev, senders))  # each packet once, where it is sent
        elif e["source"] == "conntrack" and e["kind"] == "ct_new" and \
                e.get("netns") == ev["pods"]["target"]["netns"]:
            steps.append(_conntrack(e, ev, senders))
        elif e["kind"] == "drop" and e.get("dport") in ev["ports"].values():
            lane = _lane(senders.listening.get((e.get("netns"), e.get("dport"))),
                         e.get("netns") or "", ev)
            steps.append(Step(lane, lane, f"✕ kfree_skb {e.get('reason')} "
                              f"{(e.get('extra') or {}).get('location', '')}".strip(), "drop"))
    c = ev.get("counters", {})
    if c.get("TcpExtListenDrops", 0) > 0:
        steps.append(Step(AGENT, AGENT, f"✕ SYN dropped at the listener: ListenDrops "
                          f"+{c['TcpExtListenDrops']}, OutNoRoutes +{c.get('IpOutNoRoutes', 0)} "
                          "(no route for the SYN-ACK from 127.0.0.1)", "drop"))
    steps.append(Step(CLIENT, CLIENT, _result(ev.get("client", {})), "result"))
    return collapse([s for s in steps if s is not None])


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
