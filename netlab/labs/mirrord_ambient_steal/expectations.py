"""The checks the variants are judged by. Each returns (held, what was seen). Pure.

Every check reads kernel- or client-observed evidence: curl's exit code and body,
conntrack tuples, BPF packets, AF_PACKET copies from the node link, iptables-save,
sysctls read back, SNMP counters.
"""

from __future__ import annotations

from typing import Any

from netlab.labs.framework import Evidence, Expectation, dig

MARKER = "stolen-by-netlab-agent"


def _body(ev: Evidence) -> str:
    return (dig(ev, "client.stdout", "") or "")[:160].replace("\n", " ")


def _client(ev: Evidence) -> str:
    return (f"curl exit {dig(ev, 'client.exit_code')}, HTTP {dig(ev, 'client.http_code') or '-'}, "
            f"body {_body(ev)!r}" + (f", stderr {dig(ev, 'client.stderr')!r}"
                                     if dig(ev, "client.stderr") else ""))


def stolen(ev: Evidence) -> tuple[bool, str]:
    return dig(ev, "client.exit_code") == 0 and MARKER in dig(ev, "client.stdout", ""), _client(ev)


def not_stolen(ev: Evidence) -> tuple[bool, str]:
    return MARKER not in (dig(ev, "client.stdout", "") or ""), _client(ev)


def app_answered(ev: Evidence) -> tuple[bool, str]:
    target = dig(ev, "pods.target.name")
    out = dig(ev, "client.stdout", "") or ""
    return (dig(ev, "client.exit_code") == 0 and f'"server": "{target}"' in out
            and MARKER not in out), _client(ev)


def client_timed_out(ev: Evidence) -> tuple[bool, str]:
    return dig(ev, "client.exit_code") == 28 and not dig(ev, "client.stdout"), _client(ev)


def _redirects(ev: Evidence) -> list[dict[str, Any]]:
    port = dig(ev, "ports.agent")
    target_ns = dig(ev, "pods.target.netns")
    return [c for c in ev.get("conntrack", []) if c.get("netns") == target_ns
            and (c.get("extra", {}).get("reply") or {}).get("sport") == port]


def _ct(c: dict[str, Any]) -> str:
    r = c.get("extra", {}).get("reply") or {}
    return (f"{c.get('saddr')}:{c.get('sport')}→{c.get('daddr')}:{c.get('dport')} reply "
            f"{r.get('saddr')}:{r.get('sport')}→{r.get('daddr')}:{r.get('dport')}")


def _ct_seen(ev: Evidence) -> str:
    target_ns = dig(ev, "pods.target.netns")
    cts = [_ct(c) for c in ev.get("conntrack", []) if c.get("netns") == target_ns]
    return "; ".join(cts[:4]) or "no conntrack entry in the target pod"


def redirected_to_loopback(ev: Evidence) -> tuple[bool, str]:
    hits = [c for c in _redirects(ev) if (c["extra"]["reply"] or {}).get("saddr") == "127.0.0.1"]
    return bool(hits), _ct_seen(ev)


def redirected_to_agent(ev: Evidence) -> tuple[bool, str]:
    return bool(_redirects(ev)), _ct_seen(ev)


def no_redirect_to_agent(ev: Evidence) -> tuple[bool, str]:
    target_ns = dig(ev, "pods.target.netns")
    seen = any(c.get("netns") == target_ns for c in ev.get("conntrack", []))
    return seen and not _redirects(ev), _ct_seen(ev)


def _positions(ev: Evidence, key: str = "iptables") -> dict[str, int]:
    return dig(ev, f"{key}.output_positions", {}) or {}


def _order(ev: Evidence) -> str:
    return " | ".join(dig(ev, "iptables.nat_output", []) or []) or "nat OUTPUT is empty"


def jump_after_istio(ev: Evidence) -> tuple[bool, str]:
    p = _positions(ev)
    return ("MIRRORD_OUTPUT" in p and "ISTIO_OUTPUT" in p
            and p["MIRRORD_OUTPUT"] > p["ISTIO_OUTPUT"]), _order(ev)


def jump_first(ev: Evidence) -> tuple[bool, str]:
    return _positions(ev).get("MIRRORD_OUTPUT") == 1, _order(ev)


def no_mirrord_rules(ev: Evidence) -> tuple[bool, str]:
    n = dig(ev, "iptables.mirrord_rules", -1)
    return n == 0, f"{n} MIRRORD lines in iptables-save -t nat"


def rules_removed_after(ev: Evidence) -> tuple[bool, str]:
    n = dig(ev, "iptables_after_agent.mirrord_rules", -1)
    return n == 0, f"{n} MIRRORD lines left in iptables-save after the agent's SIGTERM"


def route_localnet(value: str) -> Any:
    def check(ev: Evidence) -> tuple[bool, str]:
        seen = dig(ev, "sysctl", {}).get("net.ipv4.conf.all.route_localnet")
        return seen == value, f"route_localnet read back from the pod netns: {seen}"
    return check


def syn_dies_at_agent(ev: Evidence) -> tuple[bool, str]:
    """The redirected SYN reaches lo but never gets a SYN-ACK; the kernel says why."""
    port = dig(ev, "ports.agent")
    tns = dig(ev, "pods.target.netns")
    evs = [e for e in ev.get("events", []) if e.get("netns") == tns and e["source"] == "bpf"]
    syns = [e for e in evs if e["kind"] == "rx" and e.get("dport") == port
            and e.get("tcp_flags") == "S"]
    synacks = [e for e in evs if e["kind"] == "tx" and e.get("sport") == port
               and e.get("tcp_flags") == "SA"]
    drops = [e for e in ev.get("drops", []) if e.get("dport") == port]
    c = ev.get("counters", {})
    kernel_says = (f"kfree_skb {', '.join(sorted({str(d.get('reason')) for d in drops}))}" if drops
                   else f"no kfree_skb; ListenDrops +{c.get('TcpExtListenDrops', 0)}, "
                        f"OutNoRoutes +{c.get('IpOutNoRoutes', 0)}")
    seen = (f"{len(syns)} SYN(s) received on lo for 127.0.0.1:{port}, {len(synacks)} SYN-ACK(s) "
            f"sent from :{port}; {kernel_says}")
    died = bool(drops) or (c.get("TcpExtListenDrops", 0) > 0 and c.get("IpOutNoRoutes", 0) > 0)
    return bool(syns) and not synacks and died, seen


def hbone_on_wire(ev: Evidence) -> tuple[bool, str]:
    w = ev.get("wire", {})
    return (w.get("hbone_to_target", 0) > 0 and not w.get("marker_seen")), _wire(ev)


def plaintext_on_wire(ev: Evidence) -> tuple[bool, str]:
    w = ev.get("wire", {})
    return (w.get("hbone_to_target", 0) == 0 and bool(w.get("marker_seen"))), _wire(ev)


def _wire(ev: Evidence) -> str:
    w = ev.get("wire", {})
    return (f"on node-2's link: {w.get('hbone_to_target', 0)} segment(s) to the target's :15008, "
            f"{w.get('plaintext_to_target', 0)} to its :9080; request path "
            f"{w.get('marker')!r} {'readable' if w.get('marker_seen') else 'not readable'} on the wire")


def agent_warned(ev: Evidence) -> tuple[bool, str]:
    w = dig(ev, "agent.warnings", []) or []
    return any("route_localnet" in x for x in w), ("; ".join(w) or "no warning printed")


def mirror_copy(ev: Evidence) -> tuple[bool, str]:
    marker = dig(ev, "wire.marker", "")
    copies = dig(ev, "agent.mirrored", []) or []
    hits = [c for c in copies if marker and marker in c.get("request", "")]
    return bool(hits), (f"{len(copies)} copies logged; first: {copies[0].get('request')!r} "
                        f"on {copies[0].get('ifname')}" if copies else "no copy logged")


def E(id: str, expected: str, check: Any, *keys: str) -> Expectation:
    return Expectation(id, expected, check, tuple(keys))
