"""Envoy's matching, as pure functions: filter chains of a listener, virtual hosts, routes.

Filter chain selection (Envoy `listener_impl`/`filter_chain_manager_impl`): the criteria are
tried in a fixed order (destination port, destination IP prefix, transport protocol,
application protocols); at each step the chains that name the connection's value win over
chains that leave the field empty, and a chain naming another value drops out. Nothing left
means the listener's default chain, or `filter_chain_not_found`.

Virtual hosts (Envoy `config_impl.cc`): with `ignore_port_in_host_matching` the Host's
port is dropped first; then an exact domain wins, then the longest `*.suffix`, then the
longest `prefix*`, then `*`. Domains compare case-insensitively.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Sequence

from netlab.dataplane.envoy.inspector import Inspection
from netlab.xds import FilterChain, Listener, Route, RouteConfiguration, VirtualHost


@lru_cache(maxsize=4096)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A chain's prefix range, parsed once (the snapshot's CIDRs never change)."""
    return ipaddress.ip_network(cidr, strict=False)


def _prefix_len(ranges: Sequence[str], ip: str) -> int | None:
    """Longest prefix of `ranges` containing `ip` (-1 when `ranges` is empty); None: no match."""
    if not ranges:
        return -1
    addr = ipaddress.ip_address(ip)
    best = None
    for r in ranges:
        net = _network(r)
        if addr in net and (best is None or net.prefixlen > best):
            best = net.prefixlen
    return best


def match_chain(listener: Listener, dst_ip: str, dst_port: int,
                seen: Inspection) -> FilterChain | None:
    """The chain Envoy picks for a connection to dst_ip:dst_port that the inspectors saw as `seen`."""
    chains = list(listener.filter_chains)

    def narrow(specific: list[FilterChain], generic: list[FilterChain]) -> list[FilterChain]:
        return specific or generic

    chains = narrow([c for c in chains if c.match.destination_port == dst_port],
                    [c for c in chains if c.match.destination_port is None])
    scored = [(c, _prefix_len(c.match.prefix_ranges, dst_ip)) for c in chains]
    scored = [(c, s) for c, s in scored if s is not None]
    if scored:
        top = max(s for _, s in scored)
        chains = [c for c, s in scored if s == top]
    else:
        chains = []
    chains = narrow([c for c in chains if c.match.transport_protocol == seen.transport],
                    [c for c in chains if not c.match.transport_protocol])
    chains = narrow([c for c in chains if set(c.match.application_protocols) & set(seen.alpn)],
                    [c for c in chains if not c.match.application_protocols])
    if chains:
        return chains[0]
    return listener.default_filter_chain


def strip_port(host: str) -> str:
    """`ignore_port_in_host_matching`: `prometheus:9090` → `prometheus`, `[::1]:80` → `[::1]`."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def match_vhost(rc: RouteConfiguration, host: str | None) -> VirtualHost | None:
    h = (host or "").lower()
    if rc.ignore_port_in_host_matching:
        h = strip_port(h)
    exact = [v for v in rc.virtual_hosts if h in (d.lower() for d in v.domains)]
    if exact:
        return exact[0]
    best: tuple[int, int, VirtualHost] | None = None  # (kind: 2 suffix, 1 prefix; length)
    for v in rc.virtual_hosts:
        for d in (d.lower() for d in v.domains):
            if d.startswith("*") and len(d) > 1 and h.endswith(d[1:]) and len(h) > len(d) - 1:
                cand = (2, len(d), v)
            elif d.endswith("*") and len(d) > 1 and h.startswith(d[:-1]) and len(h) > len(d) - 1:
                cand = (1, len(d), v)
            else:
                continue
            if best is None or cand[:2] > best[:2]:
                best = cand
    if best is not None:
        return best[2]
    return next((v for v in rc.virtual_hosts if "*" in v.domains), None)


def match_route(vhost: VirtualHost, method: str, path: str) -> Route | None:
    """The first route whose match fits: CONNECT matchers for CONNECT, path prefixes otherwise."""
    for r in vhost.routes:
        if r.connect_matcher:
            if method == "CONNECT":
                return r
            continue
        if method != "CONNECT" and path.startswith(r.prefix):
            return r
    return None
