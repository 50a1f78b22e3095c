"""Evidence → the steps of a sequence diagram (client, ztunnels, app, agent lanes). Pure.

Lanes are assigned from where the kernel saw a packet (which netns and interface) and
its ports, never from what a process logged. Repeated identical steps (SYN
retransmissions) collapse into one step with a count, so a timeout reads as "×3".
"""

from __future__ import annotations

from typing import Any

CLIENT, ZT1, ZT2, APP, AGENT = "client pod", "ztunnel node-1", "ztunnel node-2", "app :9080", "agent"
LANES = (CLIENT, ZT1, ZT2, APP, AGENT)
MAX_STEPS = 40


def _flags(e: dict[str, Any]) -> str:
    f = e.get("tcp_flags") or ""
    return {"S": "SYN", "SA": "SYN-ACK", "A": "ACK", "R": "RST", "RA": "RST"}.get(f, f)


def _step(e: dict[str, Any], src: str, dst: str, label: str, kind: str = "packet") -> dict[str, Any]:
    return {"ts_ns": e.get("ts_ns", 0), "src": src, "dst": dst, "label": label, "kind": kind,
            "count": 1}


def _packet(e: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any] | None:
    ports, pods = ev["ports"], ev["pods"]
    mesh = ev.get("mesh", {})
    netns, ifname = e.get("netns"), e.get("ifname")
    sport, dport, flags = e.get("sport"), e.get("dport"), _flags(e)
    src_client = ZT1 if mesh.get("client") else CLIENT
    if netns == pods["client"]["netns"] and e["kind"] == "tx":
        if ifname == "lo" and dport == 15001:
            return _step(e, CLIENT, ZT1, f"{flags} :{ports['app']} redirected to :15001")
        if ifname == "eth0" and dport == ports["hbone"]:
            return _step(e, ZT1, ZT2, f"HBONE (mTLS) {flags} → :{ports['hbone']}")
        if ifname == "eth0" and dport == ports["app"]:
            return _step(e, src_client, APP, f"plaintext {flags} → :{ports['app']}")
    if netns != pods["target"]["netns"]:
        return None
    if e["kind"] == "tx" and ifname == "lo":
        if dport == ports["agent"]:
            return _step(e, ZT2, AGENT, f"{flags} → {e.get('daddr')}:{dport} (REDIRECTed)")
        if dport == ports["app"]:
            return _step(e, ZT2, APP, f"{flags} {e.get('saddr')} → :{dport} (client IP kept)")
        if sport == ports["agent"]:
            return _step(e, AGENT, ZT2, f"{flags} from :{sport}")
        if sport == ports["app"]:
            return _step(e, APP, ZT2, f"{flags} from :{sport}")
    if e["kind"] == "rx" and ifname == "eth0" and dport == ports["app"] and flags == "SYN":
        return _step(e, src_client, APP, f"plaintext SYN → :{dport} arrives at the pod")
    if e["kind"] == "tx" and ifname == "eth0" and sport == ports["app"] and flags in ("SYN-ACK", "RST"):
        return _step(e, APP, src_client, f"{flags} from :{sport}")
    return None


def _conntrack(e: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any] | None:
    if e.get("netns") != ev["pods"]["target"]["netns"]:
        return None
    reply = (e.get("extra") or {}).get("reply") or {}
    if (reply.get("saddr"), reply.get("sport")) == (e.get("daddr"), e.get("dport")):
        return None
    lane = AGENT if reply.get("sport") == ev["ports"]["agent"] else APP
    return _step(e, lane, lane, f"conntrack: {e.get('saddr')}:{e.get('sport')} → "
                 f"{e.get('daddr')}:{e.get('dport')} answered by {reply.get('saddr')}:"
                 f"{reply.get('sport')}", "nat")


def _drop(e: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    lane = AGENT if e.get("dport") == ev["ports"]["agent"] else (
        APP if e.get("dport") == ev["ports"]["app"] else ZT2)
    where = (e.get("extra") or {}).get("location", "")
    return _step(e, lane, lane, f"✕ kfree_skb {e.get('reason')} {where}".strip(), "drop")


def sequence(ev: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for e in ev.get("events", []):
        if e["source"] == "bpf" and e["kind"] in ("rx", "tx"):
            s = _packet(e, ev)
        elif e["source"] == "conntrack" and e["kind"] == "ct_new":
            s = _conntrack(e, ev)
        elif e["kind"] == "drop" and e.get("dport") in ev["ports"].values():
            s = _drop(e, ev)
        else:
            s = None
        if s is None or (s["kind"] == "packet" and e.get("tcp_flags") == "A"):
            continue  # bare ACKs add rows, not insight
        last = steps[-1] if steps else None
        if last and (last["src"], last["dst"], last["label"]) == (s["src"], s["dst"], s["label"]):
            last["count"] += 1
        else:
            steps.append(s)
    c = ev.get("counters", {})
    if c.get("TcpExtListenDrops", 0) > 0:
        steps.append({"ts_ns": steps[-1]["ts_ns"] if steps else 0, "src": AGENT, "dst": AGENT,
                      "kind": "drop", "count": 1,
                      "label": f"✕ SYN dropped at the listener: ListenDrops +{c['TcpExtListenDrops']}"
                               f", OutNoRoutes +{c.get('IpOutNoRoutes', 0)} (no route for the "
                               "SYN-ACK from 127.0.0.1)"})
    steps = steps[:MAX_STEPS]
    client = ev.get("client", {})
    steps.append({"ts_ns": steps[-1]["ts_ns"] if steps else 0, "src": CLIENT, "dst": CLIENT,
                  "kind": "result", "count": 1, "label": _outcome(client)})
    return steps


def _outcome(client: dict[str, Any]) -> str:
    out = client.get("stdout", "")
    if client.get("exit_code") != 0:
        return f"curl exit {client.get('exit_code')}: {client.get('stderr', '')[:80]}"
    if "stolen-by-netlab-agent" in out:
        return "client gets the AGENT's answer (stolen)"
    return "client gets the APP's answer (not stolen)"
