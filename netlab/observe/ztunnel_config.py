"""`netlab ztunnel-config`: each ztunnel's own view, read from its admin port, as istioctl shows it.

The dump comes from the running process (`/config_dump` on 127.0.0.1:15000 in its node
netns, netlab/dataplane/ztunnel/config_dump.py), so certificates are the ones it holds
now. The rows here carry the columns of `istioctl ztunnel-config` (istio/istio
istioctl/pkg/writer/ztunnel/configdump: workload.go, services.go, policies.go,
certificates.go), plus identity and mesh mode, which a lab's reader asks for.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from netlab import mesh
from netlab.errors import NetlabError
from netlab.kernel import query
from netlab.observe.metrics import http_get

VIEWS = ("workloads", "services", "policies", "certificates")

# view -> (column title, row key); titles as istioctl prints them, extra ones after.
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "workloads": (("NAMESPACE", "namespace"), ("POD NAME", "name"), ("ADDRESS", "ip"), ("NODE", "node"),
                  ("WAYPOINT", "waypoint"), ("PROTOCOL", "protocol"), ("MESH", "mesh"),
                  ("IDENTITY", "identity")),
    "services": (("NAMESPACE", "namespace"), ("SERVICE NAME", "name"), ("SERVICE VIP", "vip"),
                 ("WAYPOINT", "waypoint"), ("ENDPOINTS", "endpoints")),
    "policies": (("NAMESPACE", "namespace"), ("POLICY NAME", "name"), ("KIND", "kind"), ("ACTION", "action"),
                 ("SCOPE", "scope")),
    "certificates": (("RESOURCE NAME", "identity"), ("TYPE", "type"), ("STATUS", "state"),
                     ("VALID CERT", "valid"), ("SERIAL NUMBER", "serial"), ("NOT AFTER", "notAfter"),
                     ("NOT BEFORE", "notBefore")),
}


def dumps(lab: str, node: str | None = None) -> dict[str, dict[str, Any]]:
    """node -> the config dump of that node's ztunnel (every node's, or only `node`'s)."""
    record = query.record_of(lab)
    zts = query.processes_named(record, "ztunnel/")
    if not zts:
        raise NetlabError(f"lab {lab} runs no ztunnel (no ambient pods), so there is no ztunnel config")
    if node is not None:
        nodes = [p.name.split("/", 1)[1] for p in zts]
        zts = [p for p in zts if p.name == f"ztunnel/{node}"]
        if not zts:
            raise NetlabError(f"no ztunnel on node {node!r} in lab {lab}; ztunnels run on: {', '.join(nodes)}")
    out = {}
    for p in zts:
        body = http_get(p.netns, mesh.ADMIN_PORT, "/config_dump")
        try:
            out[p.name.split("/", 1)[1]] = json.loads(body)
        except json.JSONDecodeError as e:
            raise NetlabError(f"{p.name} answered /config_dump with something that is not JSON ({e})") from e
    return out


def rows(view: str, dump: dict[str, Any], now: datetime | None = None) -> list[dict[str, str]]:
    """The rows of `view` for one ztunnel's dump, sorted as istioctl sorts them."""
    if view == "workloads":
        by_fqdn = {s["hostname"]: s["name"] for s in dump["services"]}
        return sorted(({"namespace": w["namespace"], "name": w["name"], "ip": ", ".join(w["workloadIps"]),
                        "node": w["node"], "waypoint": by_fqdn.get(w["waypoint"], w["waypoint"]) or "None",
                        "protocol": w["protocol"], "mesh": w["meshMode"], "identity": w["identity"]}
                       for w in dump["workloads"]), key=lambda r: (r["namespace"], r["name"], r["node"]))
    if view == "services":
        by_fqdn = {s["hostname"]: s["name"] for s in dump["services"]}
        return sorted(({"namespace": s["namespace"], "name": s["name"], "vip": ", ".join(s["vips"]),
                        "waypoint": by_fqdn.get(s["waypoint"], s["waypoint"]) or "None",
                        "endpoints": ", ".join(s["endpoints"]) or "(none)"}
                       for s in dump["services"]), key=lambda r: (r["namespace"], r["name"]))
    if view == "policies":
        return sorted(({"namespace": p["namespace"], "name": p["name"], "kind": p["kind"],
                        "action": p["action"], "scope": p["scope"]} for p in dump["policies"]),
                      key=lambda r: (r["namespace"], r["name"]))
    if view == "certificates":
        return certificate_rows(dump["certificates"], now or datetime.now(timezone.utc))
    raise NetlabError(f"no view {view!r}; use one of: {', '.join(VIEWS)}")


def certificate_rows(certs: list[dict[str, Any]], now: datetime) -> list[dict[str, str]]:
    """As istioctl: the first chain entry typed `CA`, the rest `Cert Chain`; serials in hex."""
    out = []
    for c in certs:
        state = "Unavailable" if "Unavailable" in c["state"] else c["state"]
        if not c["certChain"]:
            out.append({"identity": c["identity"], "type": "NA", "state": state, "valid": "false",
                        "serial": "NA", "notAfter": "NA", "notBefore": "NA"})
        for i, e in enumerate(c["certChain"]):
            start, end = _time(e["validFrom"]), _time(e["expirationTime"])
            out.append({"identity": c["identity"], "type": "CA" if i == 0 else "Cert Chain", "state": state,
                        "valid": str(start <= now < end).lower(), "serial": format(int(e["serialNumber"]), "x"),
                        "notAfter": e["expirationTime"], "notBefore": e["validFrom"]})
    return out


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
