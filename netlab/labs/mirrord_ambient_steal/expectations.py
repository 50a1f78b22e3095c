"""The checks the variants are judged by. Each returns (held, what was seen). Pure.

Every check reads kernel- or client-observed evidence: curl's exit code and body,
conntrack tuples and BPF packets (matched by example with `events_present`), AF_PACKET
copies from the node link, iptables-save, sysctls read back, SNMP counters.
"""

from __future__ import annotations

from typing import Any, Callable

from netlab.labs.framework import Evidence, dig
from netlab.observe.witness.match import events_present, find_events

MARKER = "stolen-by-netlab-agent"
Result = tuple[bool, str]


def _client(ev: Evidence) -> str:
    body = (dig(ev, "client.stdout", "") or "").replace("\n", " ")
    return (f"curl exit {dig(ev, 'client.exit_code')}, HTTP {dig(ev, 'client.http_code') or '-'}, "
            f"body {body!r}" + (f", stderr {dig(ev, 'client.stderr')!r}"
                                if dig(ev, "client.stderr") else ""))


def stolen(ev: Evidence) -> Result:
    return dig(ev, "client.exit_code") == 0 and MARKER in dig(ev, "client.stdout", ""), _client(ev)


def not_stolen(ev: Evidence) -> Result:
    return MARKER not in (dig(ev, "client.stdout", "") or ""), _client(ev)


def app_answered(ev: Evidence) -> Result:
    out = dig(ev, "client.stdout", "") or ""
    return (dig(ev, "client.exit_code") == 0 and f'"server": "{dig(ev, "pods.target.name")}"' in out
            and MARKER not in out), _client(ev)


def client_timed_out(ev: Evidence) -> Result:
    return dig(ev, "client.exit_code") == 28 and not dig(ev, "client.stdout"), _client(ev)


def _in_target(ev: Evidence, **fields: Any) -> dict[str, Any]:
    """A partial conntrack entry in the target pod's netns."""
    return {"source": "conntrack", "kind": "ct_new", "netns": dig(ev, "pods.target.netns"),
            **fields}


def redirected_to_agent(ev: Evidence) -> Result:
    m = events_present(ev["conntrack"], [_in_target(ev, extra={"reply": {
        "sport": dig(ev, "ports.agent")}})])
    return m.ok, m.seen()


def redirected_to_loopback(ev: Evidence) -> Result:
    m = events_present(ev["conntrack"], [_in_target(ev, extra={"reply": {
        "saddr": "127.0.0.1", "sport": dig(ev, "ports.agent")}})])
    return m.ok, m.seen()


def no_redirect_to_agent(ev: Evidence) -> Result:
    app, agent = dig(ev, "ports.app"), dig(ev, "ports.agent")
    direct = events_present(ev["conntrack"], [_in_target(ev, dport=app,
                                                         extra={"reply": {"sport": app}})])
    to_agent = find_events(ev["conntrack"], _in_target(ev, extra={"reply": {"sport": agent}}))
    return direct.ok and not to_agent, (f"{direct.seen()}; {len(to_agent)} conntrack "
                                        f"entr{'y' if len(to_agent) == 1 else 'ies'} answered "
                                        f"by :{agent}")


def _order(ev: Evidence) -> str:
    return " | ".join(dig(ev, "iptables.nat_output", []) or []) or "nat OUTPUT is empty"


def jump_after_istio(ev: Evidence) -> Result:
    p = dig(ev, "iptables.output_positions", {}) or {}
    return ("MIRRORD_OUTPUT" in p and "ISTIO_OUTPUT" in p
            and p["MIRRORD_OUTPUT"] > p["ISTIO_OUTPUT"]), _order(ev)


def jump_first(ev: Evidence) -> Result:
    return (dig(ev, "iptables.output_positions", {}) or {}).get("MIRRORD_OUTPUT") == 1, _order(ev)


def no_mirrord_rules(ev: Evidence) -> Result:
    n = dig(ev, "iptables.mirrord_rules", -1)
    return n == 0, f"{n} MIRRORD lines in iptables-save -t nat"


def rules_removed_after(ev: Evidence) -> Result:
    n = dig(ev, "iptables_after_agent.mirrord_rules", -1)
    return n == 0, f"{n} MIRRORD lines left in iptables-save after the agent's SIGTERM"


def route_localnet(value: str) -> Callable[[Evidence], Result]:
    def check(ev: Evidence) -> Result:
        seen = dig(ev, "sysctl", {}).get("net.ipv4.conf.all.route_localnet")
        return seen == value, f"route_localnet read back from the pod netns: {seen}"
    return check


def syn_dies_at_agent(ev: Evidence) -> Result:
    """The redirected SYN reaches lo but is never answered; the kernel says why.

    "Answered" is matched by sequence number (a SYN-ACK acking the SYN's seq + 1), not
    by port: conntrack un-NATs the agent's SYN-ACK to the app's port on its way out.
    """
    port, tns = dig(ev, "ports.agent"), dig(ev, "pods.target.netns")
    syns = find_events(ev["events"], {"source": "bpf", "netns": tns, "kind": "rx",
                                      "ifname": "lo", "dport": port, "tcp_flags": "S"})
    acks = {(s.get("seq", -2) + 1) & 0xFFFFFFFF for s in syns}
    answered = find_events(ev["events"], {"source": "bpf", "netns": tns, "kind": "tx",
                                          "tcp_flags": "SA", "ack": lambda a: a in acks})
    drops = find_events(ev["drops"], {"dport": port})
    c = ev.get("counters", {})
    kernel_says = (f"kfree_skb {', '.join(sorted({str(d.get('reason')) for d in drops}))}" if drops
                   else f"no kfree_skb; ListenDrops +{c.get('TcpExtListenDrops', 0)}, "
                        f"OutNoRoutes +{c.get('IpOutNoRoutes', 0)}")
    seen = (f"{len(syns)} SYN(s) received on lo for 127.0.0.1:{port}, {len(answered)} SYN-ACK(s) "
            f"answering them; {kernel_says}")
    died = bool(drops) or (c.get("TcpExtListenDrops", 0) > 0 and c.get("IpOutNoRoutes", 0) > 0)
    return bool(syns) and not answered and died, seen


def _wire(ev: Evidence) -> str:
    w = ev.get("wire", {})
    return (f"on node-2's link: {w.get('hbone_to_target', 0)} segment(s) to the target's "
            f":{dig(ev, 'ports.hbone')}, {w.get('plaintext_to_target', 0)} to its "
            f":{dig(ev, 'ports.app')}; request path {w.get('marker')!r} "
            f"{'readable' if w.get('marker_seen') else 'not readable'} on the wire")


def hbone_on_wire(ev: Evidence) -> Result:
    w = ev.get("wire", {})
    return (w.get("hbone_to_target", 0) > 0 and not w.get("marker_seen")), _wire(ev)


def plaintext_on_wire(ev: Evidence) -> Result:
    w = ev.get("wire", {})
    return (w.get("hbone_to_target", 0) == 0 and bool(w.get("marker_seen"))), _wire(ev)


def agent_warned(ev: Evidence) -> Result:
    w = dig(ev, "agent.warnings", []) or []
    return any("route_localnet" in x for x in w), ("; ".join(w) or "no warning printed")


def mirror_copy(ev: Evidence) -> Result:
    marker = dig(ev, "wire.marker", "")
    copies = dig(ev, "agent.mirrored", []) or []
    hits = [c for c in copies if marker and marker in c.get("request", "")]
    return bool(hits), (f"{len(copies)} cop{'y' if len(copies) == 1 else 'ies'} logged: "
                        + "; ".join(f"{c.get('request')!r} on {c.get('ifname')}" for c in copies)
                        if copies else "no copy logged")
