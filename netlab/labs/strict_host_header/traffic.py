"""One variant on the built instance: Grafana's query through the label proxy, and what
every witness saw of it.

Evidence comes from outside the proxies' claims wherever it can:
- the real client: curl's exit code, status and body, as Grafana's datasource gets them;
- the bytes on node-2's link (AF_PACKET), the hop label proxy → Prometheus: a request
  readable in clear, or only TLS, whose ClientHello (SNI, ALPN) is decoded by scapy;
- the three sidecars' access logs, Istio's TEXT format parsed field by field;
- the istio_* series the two monitoring sidecars serve on :15020, parsed with
  prometheus_client;
- the label proxy's sidecar config as `netlab proxy-config` shows it (istiod's push), for
  the question "what did Istio make of this Service port?";
- the Service and the label proxy's flags as the variant declared them (its input).

No sleep: the log lines are awaited as a condition with a deadline (a TCP line is written
when its connection closes, after curl has its answer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netlab import mesh, topology
from netlab.labs.context import Context, Pod, poll_until
from netlab.labs.framework import Evidence
from netlab.observe import metrics, proxy_config, proxylog
from netlab.kernel.afpacket import Segment
from netlab.observe.witness.wire import Wire
from netlab.plan import naming
from netlab.xds import outbound_sni

FOLDER = Path(__file__).parent
PROM_PORT = 9090
PROXY_PORT = 8080
FQDN = "prometheus.monitoring.svc.cluster.local"
QUERY = "/api/v1/query?query=up"  # what Grafana's datasource asks (an instant query)
URL = f"http://prom-label-proxy.monitoring:{PROXY_PORT}{QUERY}"
CURL_TIMEOUT = 5
LOG_WAIT = 3.0  # s: a log line is written at most this long after the exchange it records
PODS = {"grafana": "grafana/grafana", "label_proxy": "monitoring/prom-label-proxy",
        "prometheus": "monitoring/prometheus"}
SERIES = ("istio_requests_total", "istio_tcp_connections_opened_total")
LABELS = ("reporter", "source_workload", "source_principal", "destination_workload",
          "destination_service", "destination_service_name", "destination_principal",
          "request_protocol", "response_code", "response_flags", "connection_security_policy")


def traffic(ctx: Context) -> Evidence:
    pods = {k: ctx.pod(v) for k, v in PODS.items()}
    node = ctx.node(pods["prometheus"]["node"])
    peer = ctx.node(pods["label_proxy"]["node"])
    ev: Evidence = {
        "pods": {k: {f: p[f] for f in ("namespace", "name", "ip", "node", "netns")}
                 for k, p in pods.items()},
        "link": {"node": node["name"], "peer": peer["name"], "ifname": naming.NODE_IFNAME},
        "fqdn": FQDN, "sni": outbound_sni(PROM_PORT, FQDN), "port": PROM_PORT,
        "declared": _declared(ctx),
        "proxy_config": _proxy_config(ctx),
    }
    ctx.progress("curl from grafana/grafana through the label proxy (capturing the node link)")
    # AF_PACKET keeps the received copy of a packet: the requests are read where they
    # arrive (Prometheus' node), the replies where they arrive back (the label proxy's).
    with Wire(node["netns"], [PROM_PORT], ifname=naming.NODE_IFNAME) as wire, \
            Wire(peer["netns"], [PROM_PORT], ifname=naming.NODE_IFNAME) as back:
        res = ctx.exec(pods["grafana"], ["curl", "-sS", "-m", str(CURL_TIMEOUT), "-w",
                                         "\nhttp_code=%{http_code}", URL],
                       timeout=CURL_TIMEOUT + 5)
        logs = _await_logs(ctx, pods)
    body, _, code = res.stdout.rpartition("\nhttp_code=")
    ev["client"] = {"url": URL, "exit_code": res.returncode, "http_code": code.strip(),
                    "body": body, "body_bytes": len(body.encode()),
                    "stderr": res.stderr.strip()}
    ev["logs"] = logs
    ev["app_log"] = _app_log(ctx, pods["label_proxy"])
    ev["metrics"] = {k: _series(pods[k]) for k in ("label_proxy", "prometheus")}
    ev["wire"] = _wire(wire.segments, back.segments, pods["prometheus"]["ip"])
    return ev


def _declared(ctx: Context) -> dict[str, Any]:
    """The variant's input as the model has it: what `kubectl get -o yaml` would show."""
    lab = ctx.variant.change(topology.load([FOLDER / "topology.yaml"]))
    svc = next(s for s in lab.services if (s.namespace, s.name) == ("monitoring", "prometheus"))
    proxy = next(d for d in lab.deployments if (d.namespace, d.name) == ("monitoring",
                                                                          "prom-label-proxy"))
    return {"service": {"annotations": dict(svc.annotations),
                        "ports": [{"name": p.name, "port": p.port, "appProtocol": p.app_protocol}
                                  for p in svc.ports]},
            "label_proxy_args": list(proxy.containers[0].args),
            "peer_authentications": [f"{r.namespace}/{r.name}: {(r.spec.get('mtls') or {}).get('mode')}"
                                     for r in lab.resources if r.kind == "PeerAuthentication"]}


def _proxy_config(ctx: Context) -> dict[str, Any]:
    """The label proxy's sidecar config for :9090, as `netlab proxy-config` prints it."""
    snap = proxy_config.load(ctx.instance, PODS["label_proxy"])
    rows = proxy_config.listener_rows(snap)
    routes = proxy_config.as_json(snap, "routes")
    port = str(PROM_PORT)
    return {
        "listeners": [r for r in rows if r[1] == port],
        "route_configs": [{"name": rc["name"],
                           "virtual_hosts": [{"name": vh["name"], "domains": list(vh["domains"]),
                                              "routes": [r.get("name") for r in vh["routes"]]}
                                             for vh in rc["virtual_hosts"]]}
                          for rc in routes if rc["name"] == port or rc["name"].endswith(f":{port}")],
    }


def _access_lines(ctx: Context, pod: Pod) -> list[dict[str, Any]]:
    proc = f"sidecar/{pod['namespace']}/{pod['name']}"
    out = []
    for path in _log_paths(ctx, proc):
        with open(path, errors="replace") as f:
            for line in f:
                rec = proxylog.envoy(line.strip(), proc)
                if rec is not None:
                    out.append(dict(rec.fields, line=line.strip()))
    return out


def _log_paths(ctx: Context, process: str) -> list[str]:
    return [p.log for p in ctx.record.processes if p.name == process]


def _hop(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The label proxy's sidecar lines for its own outbound connections to :9090."""
    return [x for x in lines if str(x.get("downstream_local_address") or "").endswith(f":{PROM_PORT}")]


def _await_logs(ctx: Context, pods: dict[str, Pod]) -> dict[str, list[dict[str, Any]]]:
    """Every sidecar's access lines once the exchange is logged end to end: Grafana's
    sidecar has its request, the label proxy's its hop to :9090, Prometheus' sidecar a line
    (TCP lines come at close). Bounded by LOG_WAIT; what is there then is the evidence."""
    logs: dict[str, list[dict[str, Any]]] = {}

    def complete() -> bool:
        logs.update({k: _access_lines(ctx, p) for k, p in pods.items()})
        return bool(logs["grafana"] and _hop(logs["label_proxy"]) and logs["prometheus"])

    poll_until(complete, LOG_WAIT)
    return logs


def _app_log(ctx: Context, pod: Pod) -> list[dict[str, Any]]:
    """The label proxy's own JSON lines (the Host it sent upstream, as it says)."""
    proc = f"app/{pod['namespace']}/{pod['name']}/prom-label-proxy"
    out = []
    for path in _log_paths(ctx, proc):
        with open(path, errors="replace") as f:
            out += [json.loads(x) for x in f if x.startswith("{") and '"upstream"' in x]
    return out


def _series(pod: Pod) -> list[dict[str, Any]]:
    """The sidecar's istio_* request and connection series from :15020, trimmed to the
    labels the lab reads."""
    text = metrics.http_get(pod["netns"], mesh.METRICS_PORT, "/stats/prometheus")
    return [{"name": s.name, "labels": {k: s.labels[k] for k in LABELS if k in s.labels},
             "value": s.value}
            for s in metrics.parse(f"sidecar/{pod['namespace']}/{pod['name']}", text)
            if s.name in SERIES]


def _client_hello(payload: bytes) -> dict[str, Any] | None:
    """SNI and ALPN of a TLS ClientHello, decoded by scapy (not by netlab's own proxy)."""
    if payload[:1] != b"\x16":
        return None
    from scapy.layers.tls.extensions import TLS_Ext_ALPN, TLS_Ext_ServerName
    from scapy.layers.tls.handshake import TLSClientHello
    from scapy.layers.tls.record import TLS
    try:
        msg = TLS(payload).msg[0]
    except Exception:  # noqa: BLE001 - bytes that do not decode are not a ClientHello
        return None
    if not isinstance(msg, TLSClientHello):
        return None
    out: dict[str, Any] = {"sni": None, "alpn": []}
    for e in msg.ext or []:
        if isinstance(e, TLS_Ext_ServerName):
            out["sni"] = b"".join(s.servername for s in e.servernames).decode(errors="replace")
        elif isinstance(e, TLS_Ext_ALPN):
            out["alpn"] = [p.protocol.decode(errors="replace") for p in e.protocols]
    return out


def _wire(arrived: list[Segment], returned: list[Segment], server_ip: str) -> dict[str, Any]:
    """What crossed the node link between the label proxy's node and Prometheus' pod:
    `arrived` at Prometheus' node, `returned` to the label proxy's."""
    to = [s for s in arrived if (s.daddr, s.dport) == (server_ip, PROM_PORT)]
    back = [s for s in returned if (s.saddr, s.sport) == (server_ip, PROM_PORT)]
    hellos = [h for s in to if s.payload and (h := _client_hello(s.payload)) is not None]
    clear = [s for s in to if s.payload.startswith((b"GET ", b"POST "))]
    replies = [s for s in back if s.payload.startswith(b"HTTP/1.")]
    return {
        "segments_to_server": len(to), "segments_from_server": len(back),
        "bytes_to_server": sum(len(s.payload) for s in to),
        "bytes_from_server": sum(len(s.payload) for s in back),
        "requests_in_clear": [s.payload.split(b"\r\n\r\n")[0].decode("latin-1") for s in clear],
        "replies_in_clear": [s.payload.split(b"\r\n")[0].decode("latin-1") for s in replies],
        "query_in_clear": any(QUERY.encode() in s.payload for s in to),
        "answer_in_clear": any(b'"resultType"' in s.payload for s in back),
        "client_hellos": hellos,
        "server_flags": sorted({s.flags for s in back}),
        "samples": [s.to_dict(payload_chars=160)
                    for s in [x for x in to if x.payload][:4] + [x for x in back if x.payload][:3]],
    }
