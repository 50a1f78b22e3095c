"""The proxies' access logs as trace events: what each proxy decided about a connection.

Why: packets show that a connection was reset, not why. The proxy that reset it says
why in its access log (ztunnel: "connection closed due to policy rejection: explicitly
denied by: pay/ledger-deny"; Envoy: `rbac_access_denied_matched_policy[...]`,
`PassthroughCluster`). Each log line becomes an Event (`source` "proxy", `kind`
"access") carrying the addresses the proxy saw, which is how netlab.observe.story joins
it to the packets: ztunnel's `src.addr` / `dst.addr` / `dst.hbone_addr`, Envoy's
downstream and upstream addresses.

Pluggable by format: a parser takes one line and returns a `ProxyRecord`, or None when
the line is not its format. `PARSERS` is tried in order, so a new proxy's format is one
function and one entry; lines no parser claims (an app's own log) are skipped. Formats
here: ztunnel's JSON access log (netlab/dataplane/telemetry.py, as ztunnel 1.24 writes
it) and Envoy's access log in Istio's TEXT and JSON forms
(netlab/dataplane/envoy/accesslog.py).

Only lines appended while the trace ran are read (`LogWindow`). A log line's time is
the proxy's wall clock when it wrote it (ztunnel: at close; Envoy: `start_time`), turned
into the monotonic clock of every other event.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable

from netlab.dataplane import telemetry as zt
from netlab.observe.events import Event


@dataclass
class ProxyRecord:
    """One access-log entry, in the terms the trace joins on."""

    wall_ns: int  # when the proxy decided (UTC wall clock, ns): the connection's start
    proxy: str  # process name, e.g. "ztunnel/node-2"
    format: str  # "ztunnel", "envoy"
    decision: str  # in words: "denied by policy pay/ledger-deny", "PassthroughCluster", ...
    denied: bool = False  # refused by policy
    failed: bool = False  # any other failure (connect error, no route, ...)
    direction: str | None = None  # "inbound" / "outbound"
    src: str | None = None  # "ip:port" of the downstream peer
    dst: str | None = None  # "ip:port" the proxy connected to / was connected at
    hbone: str | None = None  # the HBONE CONNECT authority (ztunnel)
    upstream_local: str | None = None  # Envoy: its own end of the upstream connection
    upstream_host: str | None = None
    policy: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    logged_ns: int | None = None  # wall clock of the line when it is not `wall_ns`

    def to_event(self, clock_offset: int, netns: str | None = None) -> Event:
        """An Event at the monotonic time of the log line (`clock_offset`: realtime -
        monotonic, ns)."""
        s_addr, s_port = split_addr(self.src)
        d_addr, d_port = split_addr(self.dst)
        extra: dict[str, Any] = {"proxy": self.proxy, "format": self.format,
                                 "decision": self.decision, "denied": self.denied,
                                 "failed": self.failed, "log": self.fields}
        for key in ("direction", "hbone", "upstream_local", "upstream_host", "policy"):
            if getattr(self, key):
                extra[key] = getattr(self, key)
        if self.logged_ns is not None:
            extra["logged_ns"] = self.logged_ns - clock_offset
        return Event(ts_ns=self.wall_ns - clock_offset, source="proxy", kind="access",
                     netns_inode=0, netns=netns, proto="tcp", saddr=s_addr, sport=s_port,
                     daddr=d_addr, dport=d_port, extra=extra)


def split_addr(addr: str | None) -> tuple[str | None, int | None]:
    if not addr or ":" not in addr:
        return None, None
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else None


def _wall_ns(stamp: str) -> int | None:
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return None


# -- ztunnel ------------------------------------------------------------------------------

def _strict_note(policy: str) -> str:
    if policy.endswith("/" + zt.STATIC_STRICT_POLICY) or zt.CONVERTED_PEER_AUTHN_PREFIX in policy:
        return " (istiod's form of PeerAuthentication STRICT: plaintext refused)"
    return ""


def ztunnel(line: str, proxy: str) -> ProxyRecord | None:
    """ztunnel's JSON access log: `connection complete` and `connection failed` lines."""
    if not line.startswith("{") or '"scope":"access"' not in line.replace(" ", ""):
        return None
    try:
        f = json.loads(line)
    except ValueError:
        return None
    if f.get("scope") != "access" or f.get("message") not in ("connection complete",
                                                               "connection failed"):
        return None
    wall = _wall_ns(str(f.get("time", "")))
    if wall is None:
        return None
    # Written at close; the decision was made when the connection opened, `duration`
    # (whole ms, rounded down) earlier.
    logged = wall
    dur = str(f.get("duration") or "")
    if dur.endswith("ms") and dur[:-2].isdigit():
        wall -= int(dur[:-2]) * 1_000_000
    err = f.get("error")
    rec = ProxyRecord(wall_ns=wall, proxy=proxy, format="ztunnel", decision="",
                      direction=f.get("direction"), src=f.get("src.addr"),
                      dst=f.get("dst.addr"), hbone=f.get("dst.hbone_addr"), fields=f,
                      logged_ns=logged)
    if err and err.startswith(zt.POLICY_REJECTION):
        why = err[len(zt.POLICY_REJECTION):]
        rec.denied = True
        if why.startswith(zt.EXPLICITLY_DENIED):
            rec.policy = why[len(zt.EXPLICITLY_DENIED):]
            rec.decision = f"denied by policy {rec.policy}{_strict_note(rec.policy)}"
        else:
            rec.decision = f"denied: {why}"
    elif err:
        rec.failed = True
        rec.decision = ("refused: " if f.get("message") == "connection failed" else "failed: ") + err
    elif rec.direction == "outbound":
        rec.decision = (f"sent over HBONE to {f.get('dst.workload') or rec.dst}"
                        if rec.hbone else f"passthrough (plain TCP) to {rec.dst}")
    else:
        rec.decision = (f"accepted HBONE from {f.get('src.identity') or rec.src}"
                        if rec.hbone else "accepted plaintext")
    return rec


# -- Envoy --------------------------------------------------------------------------------

# Istio's TEXT format (netlab/dataplane/envoy/accesslog.py): tokens are [..], "..", or bare.
_TOKEN = re.compile(r'\[[^\]]*\]|"[^"]*"|\S+')
_TEXT_FIELDS = ("start_time", "request", "response_code", "response_flags",
                "response_code_details", "connection_termination_details",
                "upstream_transport_failure_reason", "bytes_received", "bytes_sent", "duration",
                "upstream_service_time", "x_forwarded_for", "user_agent", "request_id",
                "authority", "upstream_host", "upstream_cluster", "upstream_local_address",
                "downstream_local_address", "downstream_remote_address",
                "requested_server_name", "route_name")
_RBAC = "rbac_access_denied_matched_policy["
_ISTIO_POLICY = re.compile(r"ns\[([^\]]+)\]-policy\[([^\]]+)\]")


def _envoy_text(line: str) -> dict[str, Any] | None:
    if not line.startswith("[") or not re.match(r"\[\d{4}-\d\d-\d\dT", line):
        return None
    toks = _TOKEN.findall(line)
    if len(toks) != len(_TEXT_FIELDS):
        return None
    out: dict[str, Any] = {}
    for key, tok in zip(_TEXT_FIELDS, toks):
        v = tok.strip('[]"') if tok[0] in '["' else tok
        out[key] = None if v == "-" else v
    method, path, proto = ((out.pop("request") or "- - -").split(" ") + ["-", "-"])[:3]
    out.update(method=None if method == "-" else method, path=None if path == "-" else path,
               protocol=None if proto == "-" else proto)
    return out


def _envoy_decision(f: dict[str, Any]) -> tuple[str, bool, bool, str | None]:
    details = f.get("response_code_details") or ""
    flags = f.get("response_flags") or "-"
    cluster = f.get("upstream_cluster") or ""
    if details.startswith(_RBAC):
        inner = details[len(_RBAC):-1]
        m = _ISTIO_POLICY.search(inner)
        policy = f"{m[1]}/{m[2]}" if m else None
        return (f"denied by policy {policy}" if policy else "denied: no ALLOW policy matched"
                if inner == "none" else f"denied ({details})"), True, False, policy
    if cluster in ("PassthroughCluster", "InboundPassthroughCluster", "BlackHoleCluster"):
        return cluster + (f" ({flags})" if flags != "-" else ""), False, flags != "-", None
    if flags != "-":
        return f"failed: {flags} {details}".strip(), False, True, None
    code = f.get("response_code")
    what = f"{f.get('method')} {f.get('path')} -> {code}" if f.get("method") else "TCP"
    return f"{what} via {cluster or '-'}", False, False, None


def envoy(line: str, proxy: str) -> ProxyRecord | None:
    """Envoy's access log, Istio's TEXT line or its JSON form."""
    f: dict[str, Any] | None
    if line.startswith("{"):
        try:
            f = json.loads(line)
        except ValueError:
            return None
        if not isinstance(f, dict) or "downstream_remote_address" not in f:
            return None
    else:
        f = _envoy_text(line)
        if f is None:
            return None
    wall = _wall_ns(str(f.get("start_time") or ""))
    if wall is None:
        return None
    decision, denied, failed, policy = _envoy_decision(f)
    return ProxyRecord(wall_ns=wall, proxy=proxy, format="envoy", decision=decision,
                       denied=denied, failed=failed, src=f.get("downstream_remote_address"),
                       dst=f.get("downstream_local_address"),
                       upstream_local=f.get("upstream_local_address"),
                       upstream_host=f.get("upstream_host"), policy=policy, fields=f)


Parser = Callable[[str, str], "ProxyRecord | None"]
PARSERS: list[tuple[str, Parser]] = [("ztunnel", ztunnel), ("envoy", envoy)]


def parse(line: str, proxy: str) -> ProxyRecord | None:
    """The first parser that claims `line`, or None (not an access log line)."""
    line = line.strip()
    for _, parser in PARSERS:
        rec = parser(line, proxy)
        if rec is not None:
            return rec
    return None


class LogWindow:
    """The lines the lab's processes append between `start()` and `read()`."""

    def __init__(self, logs: dict[str, tuple[str, str | None]]) -> None:
        self.logs = dict(logs)  # process name -> (log path, netns)
        self._offsets: dict[str, int] = {}

    def start(self) -> "LogWindow":
        for name, (path, _) in self.logs.items():
            try:
                self._offsets[name] = os.path.getsize(path)
            except OSError:
                self._offsets[name] = 0
        return self

    def records(self) -> list[tuple[ProxyRecord, str | None]]:
        out = []
        for name, (path, netns) in self.logs.items():
            try:
                with open(path, errors="replace") as f:
                    f.seek(self._offsets.get(name, 0))
                    lines = f.read().splitlines()
            except OSError:
                continue
            out += [(rec, netns) for rec in (parse(line, name) for line in lines) if rec]
        return out

    def events(self) -> list[Event]:
        offset = time.time_ns() - time.monotonic_ns()
        return sorted((rec.to_event(offset, netns) for rec, netns in self.records()),
                      key=lambda e: e.ts_ns)


def events_of(lines: Iterable[str], proxy: str, clock_offset: int = 0) -> list[Event]:
    """Parse lines of one proxy into events (tests and offline use)."""
    return [rec.to_event(clock_offset) for rec in (parse(x, proxy) for x in lines) if rec]
