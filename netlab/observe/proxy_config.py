"""`netlab proxy-config`: a sidecar's config as `istioctl proxy-config` prints it.

Why from the snapshot: istioctl reads Envoy's /config_dump, which is what istiod pushed;
a lab's sidecar is started with exactly that push (`xds.SidecarSnapshot`), kept in the
lab's state directory, so the tables are the pushed config, not the proxy's claims.

The tables follow istioctl 1.24 (`istioctl/pkg/writer/envoy/configdump/{listener,route,
cluster}.go`, `clusters/clusters.go`): the same columns, the same sort orders, the same
MATCH and DESTINATION wording, the same omissions (routes to PassthroughCluster are left
out of the routes table, as istioctl does; `--json` keeps them). Spacing is Go's
tabwriter with istioctl's padding (1 for listeners, 5 for the others).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from netlab.errors import NetlabError
from netlab.kernel import query
from netlab.kernel.ownership import LabRecord
from netlab.plan.modes.sidecar import sidecar_process
from netlab.snapshot import SnapshotError, to_dict
from netlab.xds import (BLACKHOLE_CLUSTER, Cluster, FilterChain, FilterChainMatch, Listener,
                        RouteConfiguration, SidecarSnapshot, VirtualHost)

KINDS = ("listeners", "routes", "clusters", "endpoints")

# istioctl's names for well-known ALPN lists (listener.go protDescrs).
_PROTOCOL_NAMES: dict[tuple[str, ...], str] = {
    ("http/1.0", "http/1.1", "h2c", "istio-http/1.0", "istio-http/1.1", "istio-h2"): "App: HTTP TLS",
    ("istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"): "App: Istio HTTP Plain",
    ("istio-peer-exchange", "istio"): "App: TCP TLS",
    ("http/1.0", "http/1.1", "h2c"): "App: HTTP",
}


# -- loading ----------------------------------------------------------------------------------


def config_path(record: LabRecord, process: str) -> str:
    """Where the applier keeps a process's config (`<state dir>/<name, / → _>.json`)."""
    return os.path.join(record.dir, process.replace("/", "_") + ".json")


def load(lab: str, pod_ref: str) -> SidecarSnapshot:
    """The snapshot of the sidecar in POD (named as `netlab exec` names pods)."""
    record = query.record_of(lab)
    pod = query.find_pod(record, pod_ref)
    path = config_path(record, sidecar_process(pod["namespace"], pod["name"]))
    if not os.path.exists(path):
        raise NetlabError(f"pod {pod['namespace']}/{pod['name']} has no sidecar in lab {lab}: "
                          "inject one with the namespace label istio-injection=enabled or the pod "
                          'label sidecar.istio.io/inject: "true"')
    try:
        return SidecarSnapshot.load(path)
    except SnapshotError as e:
        raise NetlabError(f"{path} is not a sidecar config this netlab reads: {e}") from None


# -- tables -----------------------------------------------------------------------------------


def tabwrite(header: Sequence[str], rows: Sequence[Sequence[str]], padding: int) -> str:
    """Go's text/tabwriter with minwidth 0 and flags 0: every cell but the last padded."""
    table = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = []
    for r in table:
        cells = [c.ljust(widths[i] + padding) for i, c in enumerate(r[:-1])] + [r[-1]]
        lines.append("".join(cells))
    return "\n".join(lines) + "\n"


def match_text(m: FilterChainMatch | None) -> str:
    """istioctl's MATCH column (getMatches)."""
    m = m or FilterChainMatch()
    parts = []
    if m.transport_protocol:
        parts.append(f"Trans: {m.transport_protocol}")
    if m.application_protocols:
        parts.append(_PROTOCOL_NAMES.get(tuple(m.application_protocols),
                                         f"App: {','.join(m.application_protocols)}"))
    port = f":{m.destination_port}" if m.destination_port is not None else ""
    if m.prefix_ranges:
        parts.append(f"Addr: {','.join(m.prefix_ranges)}{port}")
    elif port:
        parts.append(f"Addr: *{port}")
    return "; ".join(parts) or "ALL"


def _cluster_text(cluster: str) -> str:
    return cluster if "Cluster" in cluster else f"Cluster: {cluster}"


def _describe_match(prefix: str, connect: bool) -> str:
    return "" if connect else f"{prefix}*"


def _inline_route_text(rc: RouteConfiguration) -> str:
    """describeRouteConfig: a match-all single route names its cluster, else the vhosts."""
    if len(rc.virtual_hosts) == 1:
        vh = rc.virtual_hosts[0]
        if vh.domains == ("*",) and len(vh.routes) == 1:
            r = vh.routes[0]
            if r.prefix == "/" and not r.connect_matcher:
                return _cluster_text(r.cluster)
    vhosts = []
    for vh in rc.virtual_hosts:
        routes = ", ".join(_describe_match(r.prefix, r.connect_matcher) for r in vh.routes)
        domains = "" if vh.domains == ("*",) else "/".join(vh.domains)
        vhosts.append(f"{domains} {routes}" if domains else routes)
    return "Inline Route: " + "; ".join(vhosts)


def destination_text(chain: FilterChain) -> str:
    """istioctl's DESTINATION column (getFilterType)."""
    if chain.http is not None:
        if chain.http.route_config is not None:
            return _inline_route_text(chain.http.route_config)
        if chain.http.rds:
            return f"Route: {chain.http.rds}"
        return "HTTP"
    if chain.tcp is not None and chain.tcp.cluster != BLACKHOLE_CLUSTER:
        return _cluster_text(chain.tcp.cluster)
    return "Non-HTTP/Non-TCP"


def _listener_type(listener: Listener) -> str:
    chains = _chains(listener)
    http = sum(c.http is not None for c in chains)
    tcp = sum(c.tcp is not None and c.tcp.cluster != BLACKHOLE_CLUSTER for c in chains)
    return ("HTTP+TCP" if tcp else "HTTP") if http else "TCP" if tcp else "UNKNOWN"


def _chains(listener: Listener) -> list[FilterChain]:
    return list(listener.filter_chains) + ([listener.default_filter_chain]
                                           if listener.default_filter_chain else [])


def listener_rows(snap: SidecarSnapshot) -> list[list[str]]:
    listeners = sorted(snap.listeners, key=lambda x: (x.port, x.address, _listener_type(x)))
    rows = []
    for lst in listeners:
        matches = [(match_text(c.match), destination_text(c)) for c in _chains(lst)]
        # Go's sort.Slice by destination, descending; Python's sort is stable where Go's is not.
        for match, dest in sorted(matches, key=lambda m: m[1], reverse=True):
            rows.append([lst.address, str(lst.port), match, dest])
    return rows


def _route_configs(snap: SidecarSnapshot) -> list[RouteConfiguration]:
    """RDS configs first (dynamic), then the inline ones of every chain (static), once each."""
    out = list(snap.route_configs)
    for lst in snap.listeners:
        for c in _chains(lst):
            rc = c.http.route_config if c.http else None
            if rc is not None and rc not in out:
                out.append(rc)
    numeric = sorted((rc for rc in out if rc.name.isdigit()), key=lambda rc: int(rc.name))
    return numeric + [rc for rc in out if not rc.name.isdigit()]


def domains_text(domains: Sequence[str]) -> str:
    """describeRouteDomains: the first two port-less domains, unexpanded, and a count."""
    if not domains:
        return ""
    if len(domains) == 1:
        return domains[0]
    plain = [d for d in domains if ":" not in d]
    unique = set(plain)
    drop = {d for d in plain for cut in (d.removesuffix(".svc.cluster.local"), d.removesuffix(".svc"))
            if cut != d and cut in unique}
    kept = [d for d in plain if d not in drop]
    if len(kept) > 2:
        return f"{', '.join(kept[:2])} + {len(kept) - 2} more..."
    return ", ".join(kept)


def _route_rows_of(rc: RouteConfiguration, vh: VirtualHost) -> list[list[str]]:
    rows = [[rc.name, vh.name, domains_text(vh.domains), _describe_match(r.prefix, r.connect_matcher), ""]
            for r in vh.routes if r.cluster != "PassthroughCluster"]
    if not vh.routes:
        rows.append([rc.name, vh.name, domains_text(vh.domains), "/*", "404"])
    return rows


def route_rows(snap: SidecarSnapshot) -> list[list[str]]:
    return [row for rc in _route_configs(snap) for vh in rc.virtual_hosts for row in _route_rows_of(rc, vh)]


def _split_cluster(name: str) -> tuple[str, str, str, int] | None:
    """(direction, subset, fqdn, port) of `dir|port|subset|host`, None for other names."""
    parts = name.split("|")
    if len(parts) <= 3:
        return None
    port = int(parts[1]) if parts[1].isdigit() else 0
    return parts[0], parts[2], "|".join(parts[3:]), port


def cluster_rows(snap: SidecarSnapshot) -> list[list[str]]:
    def key(c: Cluster) -> tuple[str, str, int, str]:
        parsed = _split_cluster(c.name)
        if parsed is None:
            return (c.name, "", 0, "")
        direction, subset, fqdn, port = parsed
        return (fqdn, subset, port, direction)

    rows = []
    for c in sorted(snap.clusters, key=key):
        parsed = _split_cluster(c.name)
        if parsed is None:
            rows.append([c.name, "-", "-", "-", c.type, ""])
        else:
            direction, subset, fqdn, port = parsed
            rows.append([fqdn, str(port), subset or "-", direction, c.type, ""])
    return rows


def endpoint_rows(snap: SidecarSnapshot) -> list[list[str]]:
    """EDS hosts; an HBONE endpoint is Envoy's internal address `envoy://connect_originate/ip:port`."""
    found = []
    for c in snap.clusters:
        for ep in c.endpoints:
            if ep.transport == "hbone":
                found.append((f"envoy://connect_originate/{ep.address}:{ep.port}", 0, c.name))
            else:
                found.append((ep.address, ep.port, c.name))
    found.sort(key=lambda e: (e[0], e[1], e[2]))
    return [[f"{a}:{p}" if p else a, "HEALTHY", "OK", cluster] for a, p, cluster in found]


HEADERS: dict[str, tuple[tuple[str, ...], int]] = {
    "listeners": (("ADDRESSES", "PORT", "MATCH", "DESTINATION"), 1),
    "routes": (("NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"), 5),
    "clusters": (("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"), 5),
    "endpoints": (("ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"), 5),
}
_ROWS = {"listeners": listener_rows, "routes": route_rows, "clusters": cluster_rows,
         "endpoints": endpoint_rows}


def table(snap: SidecarSnapshot, kind: str) -> str:
    header, padding = HEADERS[kind]
    return tabwrite(header, _ROWS[kind](snap), padding)


def as_json(snap: SidecarSnapshot, kind: str) -> Any:
    """Envoy-shaped objects: the resources themselves, endpoints as ClusterLoadAssignments
    (with the metadata istiod attaches: tlsMode, HBONE support, the transport chosen)."""
    if kind == "listeners":
        return [to_dict(x) for x in snap.listeners]
    if kind == "routes":
        return [to_dict(x) for x in _route_configs(snap)]
    if kind == "clusters":
        return [{k: v for k, v in to_dict(c).items() if k != "endpoints"} for c in snap.clusters]
    return [{"cluster_name": c.name, "endpoints": [to_dict(e) for e in c.endpoints]}
            for c in snap.clusters if c.type == "EDS"]
