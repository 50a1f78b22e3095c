"""The tour's report sections: per step, the evidence worth reading beside the verdicts."""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from netlab import mesh
from netlab.labs.framework import VariantResult, dig
from netlab.labs.sections import Section, Sequence as Diagram, Step, Text


def _zt(x: dict[str, Any]) -> str:
    err = f"  error: {x['error']}" if x.get("error") else ""
    return (f"{x.get('direction', '?'):8} {x.get('src.workload', x.get('src.addr'))} "
            f"({x.get('src.identity', 'no identity')}) → {x.get('dst.workload', x.get('dst.addr'))} "
            f"hbone={x.get('dst.hbone_addr', '-')}{err}")


def _wp(x: dict[str, Any]) -> str:
    return (f"{x.get('method')} {x.get('path')} {x.get('response_code')} {x.get('response_code_details')} "
            f"route={x.get('route_name')} upstream={x.get('upstream_host', '-')}")


def _flows(segs: list[dict[str, Any]]) -> list[str]:
    """One line per direction of a TCP connection seen on a link: segments, bytes, first bytes."""
    flows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in segs:
        flows.setdefault((f"{s['saddr']}:{s['sport']}", f"{s['daddr']}:{s['dport']}"), []).append(s)
    out = []
    for (src, dst), ss in flows.items():
        head = next((s["head"] for s in ss if s["bytes"]), "")
        syn = " SYN" if any(s["flags"] == "S" for s in ss) else ""
        out.append(f"{src} → {dst}: {len(ss)} segment(s), {sum(s['bytes'] for s in ss)} payload bytes"
                   f"{syn}{', opens with ' + head if head else ''}")
    return out


def sections(result: VariantResult) -> Sequence[Section]:
    ev, name = result.evidence, result.variant
    if not ev:
        return ()
    out: list[Section] = []
    if name == "out-of-mesh":
        out.append(Text("What W2's link received", tuple(_flows(dig(ev, "out_of_mesh.wire.segments", []))),
                        {":8080": "plain HTTP to the pod"}, "474554 is \"GET\": the request in clear text."))
    elif name == "l4-hbone":
        out.append(Text("W2's link: connections into S1's :15008", tuple(_flows(
            [s for s in dig(ev, "l4.wire.segments", []) if s["dport"] == mesh.HBONE_PORT])),
            {"SYN": "the one TCP connection of this identity pair"},
            "1603… is a TLS handshake record; each client opened one connection for all its requests."))
        lines = Counter(_zt(x).split(" hbone=")[0] for x in dig(ev, "l4.w2_ztunnel", []))
        out.append(Text("S1's ztunnel (W2): tunnels per peer", tuple(f"{k}  ×{n}" for k, n in lines.items())))
    elif name == "l4-same-node":
        out.append(Text("W2's ztunnel log", tuple(_zt(x) for x in dig(ev, "same_node.w2_ztunnel", []))))
    elif name == "l4-deny":
        out.append(Text("ztunnel logs", tuple(_zt(x) for x in dig(ev, "deny.w1_ztunnel", []) + dig(ev, "deny.w2_ztunnel", [])),
                        {"policy rejection": "S1's ztunnel decides on C2's principal",
                         "401": "C2's ztunnel gets the refusal and resets C2"}))
    elif name == "l7-policy":
        out.append(Text("waypoint access log", tuple(_wp(x) for x in dig(ev, "l7.waypoint_log", [])),
                        {"rbac_access_denied": "Envoy's RBAC denial: 403 RBAC: access denied"}))
    elif name == "waypoint-legs":
        out.append(_legs(ev))
        out.append(Text("logs", tuple([_zt(x) for x in dig(ev, "legs.w1_ztunnel", [])]
                                      + [_wp(x) for x in dig(ev, "legs.waypoint_log", [])])))
    elif name in ("httproute-v1", "split-90-10"):
        key = "route" if name == "httproute-v1" else "split"
        got = Counter(dig(ev, f"{key}.client.servers", []))
        out.append(Text("who answered", tuple(f"{k}: {n}" for k, n in sorted(got.items()))))
    elif name == "out-of-mesh-bypass":
        out.append(Text("echo's ztunnel (W1)", tuple(_zt(x) for x in dig(ev, "bypass.w1_ztunnel", [])
                                                     if x.get("src.workload") == "client-0"),
                        {"no identity": "plaintext from outside the mesh: no waypoint, no L7 policy"}))
    elif name == "identity":
        out.append(Text("certificate requests with W1's ztunnel bootstrap credentials", tuple(
            f"{dig(ev, f'identity.{k}.asked')}: {dig(ev, f'identity.{k}.status')} "
            f"{dig(ev, f'identity.{k}.answer')}" for k in ("asks_s1", "asks_c1")),
            {": 403": "S1 runs on W2, not W1"}))
    return out


def _legs(ev: dict[str, Any]) -> Diagram:
    ips = dig(ev, "legs.ips", {})
    segs = dig(ev, "legs.wire.segments", [])
    leg1 = sum(1 for s in segs if (s["saddr"], s["daddr"]) == (ips.get("c1"), ips.get("waypoint")))
    leg2 = sum(1 for s in segs if (s["saddr"], s["daddr"]) == (ips.get("waypoint"), ips.get("echo-v1")))
    code = (dig(ev, "legs.client.codes") or ["?"])[0]
    authority = next((x.get("dst.hbone_addr") for x in dig(ev, "legs.w1_ztunnel", [])
                      if x.get("dst.workload") == "waypoint-0"), "echo's VIP:80")
    lanes = ("C1", "ztunnel W1", "waypoint (W2)", "echo-v1")
    return Diagram("The two HBONE legs", lanes, (
        Step("C1", "ztunnel W1", f"GET {dig(ev, 'legs.marker')} to echo:80 (redirected to 15001)"),
        Step("ztunnel W1", "waypoint (W2)", f"HBONE CONNECT {authority} "
             f"({leg1} segments C1→waypoint:15008 on W2's link)"),
        Step("waypoint (W2)", "waypoint (W2)", "L7 policy, HTTPRoute echo → echo-v1", "result"),
        Step("waypoint (W2)", "ztunnel W1", f"HBONE CONNECT {ips.get('echo-v1')}:8080 "
             f"({leg2} segments waypoint→echo-v1:15008 on W1's link)"),
        Step("ztunnel W1", "echo-v1", "plain TCP to :8080 inside the pod"),
        Step("echo-v1", "C1", f"HTTP {code}", "result"),
    ), "Arrows are the connections the capture and conntrack saw; the HBONE legs are pod to pod.")
