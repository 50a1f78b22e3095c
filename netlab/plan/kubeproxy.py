"""ClusterIP Services the way kube-proxy's iptables mode does them, in every node netns.

A pod outside any mesh sends to the VIP; its node's PREROUTING DNATs to one endpoint
chosen by `-m statistic --mode random` (kube-proxy's probabilities 1/n, 1/(n-1), ...),
so replicas share traffic. Hairpin traffic (a pod reaching itself through its own
Service) is masqueraded, as kube-proxy does, or the reply would bypass conntrack.
Services with no endpoints are REJECTed in the filter table, as kube-proxy does.
"""

from __future__ import annotations

import base64
import hashlib

from netlab.snapshot import Service, ServicePort

MASQ_MARK = "0x4000/0x4000"


def _chain(prefix: str, *parts: str) -> str:
    # kube-proxy names chains by a hash of the service port (and endpoint): same idea.
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:16]


def render_kube_proxy(services: list[Service]) -> str:
    """iptables-restore text for the nat and filter tables of a node."""
    nat_chains: list[str] = ["KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    nat_rules: list[str] = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        f"-A KUBE-MARK-MASQ -j MARK --set-xmark {MASQ_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK} -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
    ]
    filter_rules: list[str] = [
        '-A INPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A FORWARD -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    ]
    for svc in services:
        for port in svc.ports:
            nat_chains_for, nat_rules_for, reject = _service_port(svc, port)
            nat_chains += nat_chains_for
            nat_rules += nat_rules_for
            filter_rules += reject
    out = ["*nat"]
    out += [f":{c} ACCEPT [0:0]" for c in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")]
    out += [f":{c} - [0:0]" for c in nat_chains]
    out += nat_rules
    out += ["COMMIT", "*filter"]
    out += [f":{c} ACCEPT [0:0]" for c in ("INPUT", "FORWARD", "OUTPUT")]
    out += [":KUBE-SERVICES - [0:0]"]
    out += filter_rules
    out += ["COMMIT", ""]
    return "\n".join(out)


def _service_port(svc: Service, port: ServicePort) -> tuple[list[str], list[str], list[str]]:
    proto = port.protocol.lower()
    pname = port.name or str(port.port)
    label = f"{svc.namespace}/{svc.name}:{pname}"
    match = f"-d {svc.vip}/32 -p {proto} -m {proto} --dport {port.port}"
    if not port.endpoints:
        reject = [f'-A KUBE-SERVICES {match} -m comment --comment "{label} has no endpoints" '
                  "-j REJECT --reject-with icmp-port-unreachable"]
        return [], [], reject
    svc_chain = _chain("KUBE-SVC-", svc.namespace, svc.name, pname, proto)
    chains = [svc_chain]
    rules = [f'-A KUBE-SERVICES {match} -m comment --comment "{label} cluster IP" -j {svc_chain}']
    n = len(port.endpoints)
    for i, ep in enumerate(port.endpoints):
        sep = _chain("KUBE-SEP-", svc.namespace, svc.name, pname, proto, ep.ip, str(ep.port))
        chains.append(sep)
        remaining = n - i
        if remaining > 1:
            rules.append(f'-A {svc_chain} -m comment --comment "{label} -> {ep.ip}:{ep.port}" '
                         f"-m statistic --mode random --probability {1 / remaining:.11f} -j {sep}")
        else:
            rules.append(f'-A {svc_chain} -m comment --comment "{label} -> {ep.ip}:{ep.port}" -j {sep}')
        rules.append(f'-A {sep} -s {ep.ip}/32 -m comment --comment "{label}" -j KUBE-MARK-MASQ')
        rules.append(f'-A {sep} -p {proto} -m comment --comment "{label}" -m {proto} '
                     f"-j DNAT --to-destination {ep.ip}:{ep.port}")
    return chains, rules, []
