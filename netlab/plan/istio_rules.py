"""Istio's iptables rules, rendered as iptables-restore text (pure; no kernel access).

The spec is Istio's own golden test files (`shared/reference/istio/`): the unit tests
compare every renderer here with them, rule by rule, through `iptables_text`. We render
IPv4 only, because netlab's pods are IPv4-only. Where a rule differs from a golden file,
`docs/iptables.md` says so and why; today none does.

Ambient (istio-cni in-pod): 1.24+ is nat REDIRECT (`ambient-inpod-1.28/default.golden`),
1.23 is mangle TPROXY (`ambient-inpod-1.23/default.golden`). Sidecar (istio-iptables, as
the istio-cni plugin drives it): `sidecar-1.28/basic.golden` and, for TPROXY, `tproxy.golden`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from netlab import mesh
from netlab.plan.profile import Capture
from netlab.plan.state import IpRuleSpec, IpsetSpec, RouteSpec

# Ports and marks are the mesh's (netlab.mesh); the names here say which role each plays
# in the rules.
SIDECAR_PROXY_STATUS_PORT = str(mesh.METRICS_PORT)  # istio-cni excludes it outbound by default
SIDECAR_EXCLUDE_INBOUND = tuple(str(p) for p in (mesh.ENVOY_STATS_PORT, mesh.HEALTH_PORT,
                                                  mesh.METRICS_PORT))
SIDECAR_TPROXY_MARK = mesh.PROXY_MARK  # istio-iptables InboundTProxyMark, written in decimal
SIDECAR_LOOPBACK_MARK = mesh.SIDECAR_OUTBOUND_MARK  # proxy-originated lo traffic, TPROXY mode

PROBE_SNAT_IP = "169.254.7.127"
PROBE_IPSET_V4 = "istio-inpod-probes-v4"
ENVOY_PASSTHROUGH_SRC = "127.0.0.6/32"
LOCALHOST = "127.0.0.1/32"

# Chains.
PRERT, OUTPUT_CHAIN, POSTRT = "ISTIO_PRERT", "ISTIO_OUTPUT", "ISTIO_POSTRT"
INBOUND, REDIRECT_CHAIN, IN_REDIRECT = "ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT"
DIVERT, TPROXY_CHAIN, OUTPUT_DNS = "ISTIO_DIVERT", "ISTIO_TPROXY", "ISTIO_OUTPUT_DNS"

_MARK = f"0x{mesh.PROXY_MARK:x}/0x{mesh.PROXY_MARK_MASK:x}"
_CONNMARK = f"0x{mesh.CONN_MARK:x}/0x{mesh.CONN_MARK_MASK:x}"
_RESTORE = f"0x{mesh.RESTORE_MASK:x}"


class _Tables:
    """Collects chains and rules per table, then prints one restore section per table."""

    def __init__(self) -> None:
        self._chains: dict[str, list[str]] = {}
        self._rules: dict[str, list[str]] = {}

    def new(self, table: str, *chains: str) -> None:
        self._chains.setdefault(table, []).extend(chains)
        self._rules.setdefault(table, [])

    def add(self, table: str, chain: str, rule: str) -> None:
        self._rules.setdefault(table, []).append(f"-A {chain} {rule}")

    def insert(self, table: str, chain: str, pos: int, rule: str) -> None:
        self._rules.setdefault(table, []).append(f"-I {chain} {pos} {rule}")

    def render(self) -> str:
        out: list[str] = []
        for table, rules in self._rules.items():
            out.append(f"*{table}")
            out += [f"-N {c}" for c in self._chains.get(table, [])]
            out += rules
            out.append("COMMIT")
        return "\n".join(out) + "\n" if out else ""


# -- ambient -----------------------------------------------------------------------


def render_ambient_inpod(
    capture: Capture,
    *,
    bypass_inbound: bool = False,
    dns_capture: bool = True,
    probe_snat_ip: str = PROBE_SNAT_IP,
) -> str:
    """Rules istio-cni installs inside an ambient pod's netns.

    `bypass_inbound` is the `ambient.istio.io/bypass-inbound-capture` annotation (Istio's
    "ingress mode"); `dns_capture` is DNS proxying for this pod. Istio's `ingress.golden`
    is bypass *and* no DNS (its test case leaves DNS off), so tests pass both.
    `capture` is the Istio profile's: "redirect" (1.24+) or "tproxy" (1.23).
    """
    if capture == "redirect":
        return _ambient_redirect(bypass_inbound, dns_capture, probe_snat_ip)
    if capture == "tproxy":
        if bypass_inbound:
            # No 1.23 golden for it; rendering a guess would pass off unverified rules.
            raise ValueError("bypass_inbound has no verified TPROXY (1.23) rules; use 1.24+")
        return _ambient_tproxy(dns_capture, probe_snat_ip)
    raise ValueError(f"unknown ambient capture {capture!r}")


def _ambient_redirect(bypass: bool, dns: bool, probe: str) -> str:
    t = _Tables()
    t.new("mangle", PRERT, OUTPUT_CHAIN)
    t.add("mangle", "PREROUTING", f"-j {PRERT}")
    t.add("mangle", "OUTPUT", f"-j {OUTPUT_CHAIN}")
    t.add("mangle", PRERT, f"-m mark --mark {_MARK} -j CONNMARK --set-xmark {_CONNMARK}")
    t.add("mangle", OUTPUT_CHAIN, f"-m connmark --mark {_CONNMARK} -j CONNMARK --restore-mark "
                                  f"--nfmask {_RESTORE} --ctmask {_RESTORE}")
    t.new("nat", PRERT, OUTPUT_CHAIN)
    t.add("nat", "OUTPUT", f"-j {OUTPUT_CHAIN}")
    # With bypass the nat ISTIO_PRERT chain and its jump still exist, empty (ingress.golden).
    t.add("nat", "PREROUTING", f"-j {PRERT}")
    if not bypass:
        t.add("nat", PRERT, f"-s {probe} -p tcp -m tcp -j ACCEPT")
    t.add("nat", OUTPUT_CHAIN, f"-d {probe} -p tcp -m tcp -j ACCEPT")
    if not bypass:
        t.add("nat", PRERT, f"! -d {LOCALHOST} -p tcp ! --dport {mesh.HBONE_PORT} "
                            f"-m mark ! --mark {_MARK} -j REDIRECT "
                            f"--to-ports {mesh.INBOUND_PORT}")
    if dns:
        t.add("nat", OUTPUT_CHAIN, f"! -o lo -p udp -m mark ! --mark {_MARK} -m udp --dport 53 "
                                   f"-j REDIRECT --to-port {mesh.DNS_PROXY_PORT}")
        t.add("nat", OUTPUT_CHAIN, f"! -d {LOCALHOST} -p tcp --dport 53 -m mark ! --mark {_MARK} "
                                   f"-j REDIRECT --to-ports {mesh.DNS_PROXY_PORT}")
    _ambient_nat_output_tail(t)
    if dns:
        # Separate conntrack zones for ztunnel<->upstream DNS (istio#33469).
        t.new("raw", OUTPUT_CHAIN, PRERT)
        t.add("raw", "PREROUTING", f"-j {PRERT}")
        t.add("raw", "OUTPUT", f"-j {OUTPUT_CHAIN}")
        t.add("raw", OUTPUT_CHAIN, f"-p udp -m mark --mark {_MARK} -m udp --dport 53 -j CT --zone 1")
        t.add("raw", PRERT, f"-p udp -m mark ! --mark {_MARK} -m udp --sport 53 -j CT --zone 1")
    return t.render()


def _ambient_nat_output_tail(t: _Tables) -> None:
    """Shared by both versions: ztunnel's traffic, pod-to-self over lo, then capture.

    The `! -d 127.0.0.1/32 -o lo -j ACCEPT` rule ends nat OUTPUT for a pod calling itself
    and for ztunnel's spoofed-source inbound delivery: a chain appended to OUTPUT after
    ours never sees those packets (mesh-facts §10c, the mirrord steal failure).
    """
    t.add("nat", OUTPUT_CHAIN, f"-p tcp -m mark --mark {_CONNMARK} -j ACCEPT")
    t.add("nat", OUTPUT_CHAIN, f"! -d {LOCALHOST} -o lo -j ACCEPT")
    t.add("nat", OUTPUT_CHAIN, f"! -d {LOCALHOST} -p tcp -m mark ! --mark {_MARK} -j REDIRECT "
                               f"--to-ports {mesh.OUTBOUND_PORT}")


def _ambient_tproxy(dns: bool, probe: str) -> str:
    t = _Tables()
    t.new("mangle", PRERT, OUTPUT_CHAIN)
    t.add("mangle", "PREROUTING", f"-j {PRERT}")
    t.add("mangle", "OUTPUT", f"-j {OUTPUT_CHAIN}")
    t.add("mangle", PRERT, f"-m mark --mark {_MARK} -j CONNMARK --set-xmark {_CONNMARK}")
    t.add("mangle", PRERT, f"-s {probe} -p tcp -m tcp -j ACCEPT")
    t.add("mangle", PRERT, f"! -d {LOCALHOST} -p tcp -i lo -j ACCEPT")
    t.add("mangle", PRERT, f"-p tcp -m tcp --dport {mesh.HBONE_PORT} -m mark ! --mark {_MARK} "
                           f"-j TPROXY --on-port {mesh.HBONE_PORT} --tproxy-mark {_CONNMARK}")
    t.add("mangle", PRERT, "-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    t.add("mangle", PRERT, f"! -d {LOCALHOST} -p tcp -m mark ! --mark {_MARK} -j TPROXY "
                           f"--on-port {mesh.INBOUND_PORT} --tproxy-mark {_CONNMARK}")
    t.add("mangle", OUTPUT_CHAIN, f"-m connmark --mark {_CONNMARK} -j CONNMARK --restore-mark "
                                  f"--nfmask {_RESTORE} --ctmask {_RESTORE}")
    t.new("nat", OUTPUT_CHAIN)
    t.add("nat", "OUTPUT", f"-j {OUTPUT_CHAIN}")
    t.add("nat", OUTPUT_CHAIN, f"-d {probe} -p tcp -m tcp -j ACCEPT")
    if dns:  # 1.23 captured UDP DNS only, and without the mark exemption 1.24 added
        t.add("nat", OUTPUT_CHAIN, f"! -o lo -p udp -m udp --dport 53 -j REDIRECT "
                                   f"--to-port {mesh.DNS_PROXY_PORT}")
    _ambient_nat_output_tail(t)
    return t.render()


def ambient_policy_routing(netns: str) -> tuple[list[IpRuleSpec], list[RouteSpec]]:
    """The in-pod `ip rule` + table-100 local route that istio-cni adds next to the rules.

    In 1.23 this is load-bearing: TPROXY sets 0x111 and the packet must route to the
    local stack, and ztunnel's replies (connmark restored to 0x111) must too. istio-cni
    1.24+ still installs the same rule and route on every pod (CreateInpodRules calls
    addLoopbackRoute and addInpodMarkIPRule before the REDIRECT rules), so netlab installs
    them in both versions; with REDIRECT they steer connmarked reply traffic to lo.
    """
    rules = [IpRuleSpec(netns=netns, fwmark=mesh.CONN_MARK, mask=mesh.CONN_MARK_MASK,
                        table=mesh.INPOD_ROUTE_TABLE, priority=mesh.INPOD_RULE_PRIORITY)]
    routes = [RouteSpec(netns=netns, dst="0.0.0.0/0", dev="lo", table=mesh.INPOD_ROUTE_TABLE,
                        type="local")]
    return rules, routes


def render_ambient_hostprobe(*, jump_first: bool) -> str:
    """Node-netns rule that SNATs kubelet probes to 169.254.7.127 so pods can exempt them.

    1.24+ inserts the jump at the head of POSTROUTING (`-I POSTROUTING 1`, `jump_first`),
    so it runs before kube-proxy's masquerade; 1.23 appended it.
    """
    t = _Tables()
    t.new("nat", POSTRT)
    if jump_first:
        t.insert("nat", "POSTROUTING", 1, f"-j {POSTRT}")
    else:
        t.add("nat", "POSTROUTING", f"-j {POSTRT}")
    t.add("nat", POSTRT, f"-m owner --socket-exists -p tcp -m set --match-set {PROBE_IPSET_V4} "
                         f"dst -j SNAT --to-source {PROBE_SNAT_IP}")
    return t.render()


def hostprobe_ipset(netns: str, pod_ips: Iterable[str]) -> IpsetSpec:
    """The node's ipset of ambient pod IPs that the hostprobe SNAT rule matches on."""
    return IpsetSpec(netns=netns, name=PROBE_IPSET_V4, type="hash:ip",
                     members=tuple(sorted(set(pod_ips))))


# -- sidecar -----------------------------------------------------------------------


def render_sidecar(
    mode: Literal["REDIRECT", "TPROXY"] = "REDIRECT",
    *,
    proxy_uid: int = mesh.PROXY_UID,
    proxy_gid: int = mesh.PROXY_GID,
    inbound_ports: str = "*",
    exclude_inbound: Sequence[str] = SIDECAR_EXCLUDE_INBOUND,
    exclude_outbound_ports: Sequence[str] = (SIDECAR_PROXY_STATUS_PORT,),
    outbound_ranges_include: str = "*",
    outbound_ranges_exclude: Sequence[str] = (),
    exclude_interfaces: Sequence[str] = (),
    dns_servers: Sequence[str] = (),
) -> str:
    """Sidecar capture rules as istio-iptables writes them (IPv4 half).

    Defaults are what the istio-cni plugin passes for a plain pod (`basic.golden`):
    exclude inbound 15020/15021/15090 and outbound 15020. Excluded inbound ports are
    rendered in ascending order: the plugin appends "15020,15021,15090" to the annotation
    value, while the injected istio-init keeps `-d 15090,15021,15020`; RETURNs on
    distinct ports commute, so the order never changes a packet's path.

    `inbound_ports=""` and `outbound_ranges_include=""` capture nothing, which is
    istio-iptables' default config (`empty.golden`): the chains exist, nothing jumps to
    ISTIO_INBOUND and nothing reaches ISTIO_REDIRECT. `dns_servers` turns on DNS
    capture for those resolvers only (the `tproxy.golden` case); capture-all-DNS has no
    golden file, so it is not offered.
    """
    if mode not in ("REDIRECT", "TPROXY"):
        raise ValueError(f"unknown interception mode {mode!r}")
    tproxy = mode == "TPROXY"
    excl_in = sorted(set(exclude_inbound), key=int)
    t = _Tables()
    if tproxy and inbound_ports:
        t.new("mangle", DIVERT, TPROXY_CHAIN, INBOUND)
        for ifname in exclude_interfaces:
            t.add("mangle", "PREROUTING", f"-i {ifname} -j RETURN")
            t.add("mangle", "OUTPUT", f"-o {ifname} -j RETURN")
    t.new("nat", INBOUND, REDIRECT_CHAIN, IN_REDIRECT, OUTPUT_CHAIN)
    if dns_servers:
        t.new("nat", OUTPUT_DNS)
    for ifname in exclude_interfaces:
        t.add("nat", "PREROUTING", f"-i {ifname} -j RETURN")
        t.add("nat", "OUTPUT", f"-o {ifname} -j RETURN")
    t.add("nat", INBOUND, f"-p tcp --dport {mesh.HBONE_PORT} -j RETURN")
    t.add("nat", REDIRECT_CHAIN, f"-p tcp -j REDIRECT --to-ports {mesh.OUTBOUND_PORT}")
    t.add("nat", IN_REDIRECT, f"-p tcp -j REDIRECT --to-ports {mesh.INBOUND_PORT}")
    if inbound_ports:
        if tproxy:
            _sidecar_tproxy_inbound(t, inbound_ports, excl_in, proxy_uid, proxy_gid)
        else:
            _sidecar_redirect_inbound(t, inbound_ports, excl_in)
    t.add("nat", "OUTPUT", f"-j {OUTPUT_CHAIN}")
    for port in exclude_outbound_ports:
        t.add("nat", OUTPUT_CHAIN, f"-p tcp --dport {port} -j RETURN")
        t.add("nat", OUTPUT_CHAIN, f"-p udp --dport {port} -j RETURN")
    t.add("nat", OUTPUT_CHAIN, f"-o lo -s {ENVOY_PASSTHROUGH_SRC} -j RETURN")
    dns = bool(dns_servers)
    for kind, ident in (("uid", proxy_uid), ("gid", proxy_gid)):
        # istio-iptables excludes 53 from the lo->inbound redirect for the uid rule only.
        dports = f"-m multiport ! --dports 53,{mesh.HBONE_PORT}" if dns and kind == "uid" else \
            f"! --dport {mesh.HBONE_PORT}"
        t.add("nat", OUTPUT_CHAIN, f"-o lo ! -d {LOCALHOST} -p tcp {dports} "
                                   f"-m owner --{kind}-owner {ident} -j {IN_REDIRECT}")
        not_dns = "-p tcp ! --dport 53 " if dns else ""
        t.add("nat", OUTPUT_CHAIN, f"-o lo {not_dns}-m owner ! --{kind}-owner {ident} -j RETURN")
        t.add("nat", OUTPUT_CHAIN, f"-m owner --{kind}-owner {ident} -j RETURN")
    if dns:
        _sidecar_dns(t, dns_servers, proxy_uid, proxy_gid)
    t.add("nat", OUTPUT_CHAIN, f"-d {LOCALHOST} -j RETURN")
    for cidr in outbound_ranges_exclude:
        t.add("nat", OUTPUT_CHAIN, f"-d {cidr} -j RETURN")
    if outbound_ranges_include == "*":
        t.add("nat", OUTPUT_CHAIN, f"-j {REDIRECT_CHAIN}")
    elif outbound_ranges_include:
        for cidr in outbound_ranges_include.split(","):
            t.add("nat", OUTPUT_CHAIN, f"-d {cidr.strip()} -j {REDIRECT_CHAIN}")
    return t.render()


def _sidecar_redirect_inbound(t: _Tables, inbound_ports: str, excl: list[str]) -> None:
    t.add("nat", "PREROUTING", f"-p tcp -j {INBOUND}")
    if inbound_ports == "*":
        for port in excl:
            t.add("nat", INBOUND, f"-p tcp --dport {port} -j RETURN")
        t.add("nat", INBOUND, f"-p tcp -j {IN_REDIRECT}")
    else:
        for port in inbound_ports.split(","):
            t.add("nat", INBOUND, f"-p tcp --dport {port.strip()} -j {IN_REDIRECT}")


def _sidecar_tproxy_inbound(t: _Tables, inbound_ports: str, excl: list[str],
                            uid: int, gid: int) -> None:
    """Inbound via mangle TPROXY; needs `ip rule fwmark 1337 lookup 133` + a local route."""
    mark = SIDECAR_TPROXY_MARK
    t.add("mangle", DIVERT, f"-j MARK --set-mark {mark}")
    t.add("mangle", DIVERT, "-j ACCEPT")
    t.add("mangle", TPROXY_CHAIN, f"! -d {LOCALHOST} -p tcp -j TPROXY "
                                  f"--tproxy-mark {mark}/0xffffffff --on-port {mesh.INBOUND_PORT}")
    t.add("mangle", "PREROUTING", f"-p tcp -j {INBOUND}")
    if inbound_ports == "*":
        # Same shape as REDIRECT mode, in mangle (no golden file covers exclusions here).
        for port in excl:
            t.add("mangle", INBOUND, f"-p tcp --dport {port} -j RETURN")
        t.add("mangle", INBOUND, f"-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j {DIVERT}")
        t.add("mangle", INBOUND, f"-p tcp -j {TPROXY_CHAIN}")
    else:
        for port in inbound_ports.split(","):
            port = port.strip()
            t.add("mangle", INBOUND, f"-p tcp --dport {port} -m conntrack --ctstate "
                                     f"RELATED,ESTABLISHED -j {DIVERT}")
            t.add("mangle", INBOUND, f"-p tcp --dport {port} -j {TPROXY_CHAIN}")
    t.add("mangle", "PREROUTING", f"-p tcp -m mark --mark {mark} -j CONNMARK --save-mark")
    t.add("mangle", "OUTPUT", f"-p tcp -o lo -m mark --mark {mark} -j RETURN")
    for kind, ident in (("uid", uid), ("gid", gid)):
        t.add("mangle", "OUTPUT", f"! -d {LOCALHOST} -p tcp -o lo -m owner --{kind}-owner {ident} "
                                  f"-j MARK --set-mark {SIDECAR_LOOPBACK_MARK}")
    t.add("mangle", "OUTPUT", f"-p tcp -m connmark --mark {mark} -j CONNMARK --restore-mark")
    t.insert("mangle", INBOUND, 1, f"-p tcp -m mark --mark {mark} -j RETURN")
    t.insert("mangle", INBOUND, 2, f"-p tcp -s {ENVOY_PASSTHROUGH_SRC} -i lo -j RETURN")
    t.insert("mangle", INBOUND, 3, f"-p tcp -i lo -m mark ! --mark {SIDECAR_LOOPBACK_MARK} -j RETURN")


def _sidecar_dns(t: _Tables, servers: Sequence[str], uid: int, gid: int) -> None:
    t.add("nat", OUTPUT_CHAIN, f"-j {OUTPUT_DNS}")
    for s in servers:
        t.add("nat", OUTPUT_DNS, f"-p tcp --dport 53 -d {s}/32 -j REDIRECT --to-ports {mesh.DNS_PROXY_PORT}")
        t.add("nat", OUTPUT_DNS, f"-p udp --dport 53 -d {s}/32 -j REDIRECT --to-port {mesh.DNS_PROXY_PORT}")
    t.new("raw", OUTPUT_DNS, INBOUND)
    t.add("raw", "OUTPUT", f"-j {OUTPUT_DNS}")
    for kind, ident in (("uid", uid), ("gid", gid)):
        t.add("raw", OUTPUT_DNS, f"-p udp --dport 53 -m owner --{kind}-owner {ident} -j CT --zone 1")
        t.add("raw", OUTPUT_DNS, f"-p udp --sport {mesh.DNS_PROXY_PORT} -m owner --{kind}-owner {ident} "
                                 f"-j CT --zone 2")
    t.add("raw", "PREROUTING", f"-j {INBOUND}")
    for s in servers:
        t.add("raw", OUTPUT_DNS, f"-p udp --dport 53 -d {s}/32 -j CT --zone 2")
        t.add("raw", INBOUND, f"-p udp --sport 53 -s {s}/32 -j CT --zone 1")
