"""ztunnel's TCP metrics and access log, as istio/ztunnel 1.24.0 emits them (docs/policy-telemetry.md).

The labs reproduce Kiali bugs that hinge on *which reporter* emits *which labels*, so
every choice here follows ztunnel's `src/proxy/metrics.rs`, `outbound.rs`, `inbound.rs`
and `inbound_passthrough.rs` at tag 1.24.0, and the tests compare with those sources'
facts, not with netlab's earlier output:

- the label set and its order are `CommonTrafficLabels`; a missing value is `unknown`;
- `source_principal` only from the *derived* source (our identity on outbound HBONE,
  the TLS peer inbound); `destination_principal` from the destination workload,
  whatever the transport;
- no `app` label: Prometheus' pod-label relabelling adds `app="ztunnel"`;
- bytes series are created at open with `response_flags="-"`; only the closed counter
  carries the final flag;
- the exposition is OpenMetrics (rust prometheus_client 0.22): `# HELP` text ending in
  '.', `# TYPE` without `_total`, integer samples, `# EOF`;
- the access log: "connection opened" at debug, "connection complete" at info (error
  on failure) with `duration`, `bytes_sent`/`bytes_recv` un-flipped for the source
  reporter, and "connection failed" (warn) for requests refused before a connection
  record exists (ztunnel's `log_early_deny`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Iterable, Literal, TextIO

from netlab import mesh
from netlab.dataplane.proxy.admin import metrics_server
from netlab.snapshot import Workload

UNKNOWN = "unknown"

# CommonTrafficLabels, in field order (ztunnel@1.24.0 src/proxy/metrics.rs).
LABELS = (
    "reporter",
    "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_cluster",
    "destination_service", "destination_service_namespace", "destination_service_name",
    "destination_workload", "destination_canonical_service", "destination_canonical_revision",
    "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_cluster",
    "request_protocol", "response_flags", "connection_security_policy",
)

# Family name (the sub-registry prefix `istio` + ztunnel's name) and help text, in
# registration order. rust prometheus_client appends '.' to the help text.
METRICS = {
    "opened": ("istio_tcp_connections_opened", "The total number of TCP connections opened"),
    "closed": ("istio_tcp_connections_closed", "The total number of TCP connections closed"),
    "received": ("istio_tcp_received_bytes",
                 "The size of total bytes received during request in case of a TCP connection"),
    "sent": ("istio_tcp_sent_bytes",
             "The size of total bytes sent during response in case of a TCP connection"),
}

# What ztunnel's admin server sends with /metrics (src/metrics/server.rs @1.24.0).
CONTENT_TYPE = "application/openmetrics-text;charset=utf-8;version=1.0.0"

LogLevel = Literal["debug", "info", "warn", "error"]
_LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}

# AuthorizationRejectionError and proxy::Error texts (src/proxy.rs @1.24.0).
POLICY_REJECTION = "connection closed due to policy rejection: "
EXPLICITLY_DENIED = "explicitly denied by: "
NONE_ALLOWED = "allow policies exist, but none allowed"
STATIC_STRICT_POLICY = "istio_converted_static_strict"  # istiod's ambient/authorization.go
CONVERTED_PEER_AUTHN_PREFIX = "converted_peer_authentication_"


@dataclass
class ConnRecord:
    """One proxied connection, seen by one ztunnel in one direction.

    `src_identity` is the *derived* source identity (ours on outbound HBONE, the TLS
    peer's inbound); `dst_identity` the destination workload's, known whenever the
    workload is. `started` survives `dataclasses.replace` (a flag set on close), so a
    denied line still carries its duration.
    """

    reporter: Literal["source", "destination"]
    src: Workload | None
    dst: Workload | None
    src_addr: str
    dst_addr: str
    hbone_addr: str | None
    src_identity: str | None
    dst_identity: str | None
    security: Literal["mutual_tls", "unknown"]
    direction: Literal["inbound", "outbound"]
    response_flags: str = "-"
    dst_service: str | None = None  # FQDN of the Service used, e.g. "reviews.bookinfo.svc.cluster.local"
    started: float = field(default_factory=time.monotonic)


def _v(value: str | None) -> str:
    return value if value else UNKNOWN


def _side(prefix: str, w: Workload | None) -> dict[str, str]:
    """`with_source`/`with_destination`: `*_app`/`*_version` are the canonical name/revision."""
    if w is None:
        return {f"{prefix}_{k}": UNKNOWN for k in ("workload", "canonical_service", "canonical_revision",
                                                    "workload_namespace", "app", "version", "cluster")}
    return {
        f"{prefix}_workload": _v(w.workload_name),
        f"{prefix}_canonical_service": _v(w.canonical_service),
        f"{prefix}_canonical_revision": _v(w.canonical_revision),
        f"{prefix}_workload_namespace": _v(w.namespace),
        f"{prefix}_app": _v(w.canonical_service),
        f"{prefix}_version": _v(w.canonical_revision),
        f"{prefix}_cluster": mesh.TELEMETRY_CLUSTER,
    }


def _service(fqdn: str | None) -> dict[str, str]:
    parts = (fqdn or "").split(".")
    if not fqdn or len(parts) < 2:
        return {"destination_service": _v(fqdn), "destination_service_name": _v(fqdn),
                "destination_service_namespace": UNKNOWN}
    return {"destination_service": fqdn, "destination_service_name": parts[0],
            "destination_service_namespace": parts[1]}


def labels_for(rec: ConnRecord) -> dict[str, str]:
    """The CommonTrafficLabels of one record, in ztunnel's order."""
    mtls = rec.security == "mutual_tls"
    out = {"reporter": rec.reporter, **_side("source", rec.src), **_side("destination", rec.dst),
           **_service(rec.dst_service),
           # Derived source only: our identity on outbound HBONE, the TLS peer's inbound.
           "source_principal": _v(rec.src_identity) if mtls else UNKNOWN,
           # with_destination: the destination workload's identity, mTLS or not.
           "destination_principal": _v(rec.dst_identity) if rec.dst is not None else UNKNOWN,
           "request_protocol": "tcp", "response_flags": _v(rec.response_flags),
           "connection_security_policy": rec.security}
    return {k: out[k] for k in LABELS}


def rejection_error(reason: str) -> str:
    """`proxy::Error::AuthorizationPolicyRejection` as ztunnel prints it."""
    return POLICY_REJECTION + reason


def denied_by(policy: str) -> str:
    """The `ExplicitlyDenied` reason for a DENY policy `ns/name`."""
    return EXPLICITLY_DENIED + policy


def http_status_error(status: int) -> str:
    """`proxy::Error::HttpStatus` as the client side prints an HBONE refusal."""
    from http import HTTPStatus

    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"http status: {status} {phrase}".rstrip()


def io_error(e: BaseException) -> str:
    """An OS error as Rust's io::Error prints it: "Connection refused (os error 111)"."""
    import errno
    import os

    code = getattr(e, "errno", None)
    if isinstance(e, TimeoutError) and code is None:
        code = errno.ETIMEDOUT
    return f"{os.strerror(code)} (os error {code})" if code else (str(e) or type(e).__name__)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics(families: Iterable[tuple[str, str, dict[tuple[str, ...], int]]],
                labels: tuple[str, ...] = LABELS) -> bytes:
    """Counter families in OpenMetrics text, as rust prometheus_client 0.22 encodes them."""
    lines: list[str] = []
    for name, help_text, series in families:
        lines.append(f"# HELP {name} {help_text}.")
        lines.append(f"# TYPE {name} counter")
        for key, value in series.items():
            body = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(labels, key))
            lines.append(f"{name}_total{{{body}}} {int(value)}")
    lines.append("# EOF")
    return ("\n".join(lines) + "\n").encode()


class _Counters:
    """Thread-safe counter families keyed by label values, in registration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[str, ...], int]] = {k: {} for k in METRICS}

    def inc(self, metric: str, labels: dict[str, str], amount: int) -> None:
        key = tuple(labels[k] for k in LABELS)
        with self._lock:
            series = self._values[metric]
            series[key] = series.get(key, 0) + int(amount)

    def families(self) -> list[tuple[str, str, dict[tuple[str, ...], int]]]:
        with self._lock:
            return [(name, doc, dict(self._values[metric])) for metric, (name, doc) in METRICS.items()]


class ZtunnelTelemetry:
    """Metrics plus JSON access log for one node's ztunnel.

    `log_level` is ztunnel's: the default `info` hides "connection opened" (a debug
    event), as in a real cluster.
    """

    def __init__(self, node: str, log_stream: TextIO, log_level: LogLevel = "info") -> None:
        self.node = node
        self.log_stream = log_stream
        self.log_level = log_level
        self._counters = _Counters()
        self._log_lock = threading.Lock()
        # Bytes already counted while a connection lived, by (id(record), "received"|"sent").
        self._live: dict[tuple[int, str], int] = {}
        self._live_lock = threading.Lock()

    def opened(self, rec: ConnRecord) -> None:
        """ConnectionResult::new: +1 opened, the bytes series exist (at 0), debug line."""
        labels = labels_for(replace(rec, response_flags="-"))
        self._counters.inc("opened", labels, 1)
        self._counters.inc("received", labels, 0)
        self._counters.inc("sent", labels, 0)
        self._access("debug", "connection opened", rec, {})

    def counter(self, rec: ConnRecord, which: Literal["received", "sent"]) -> Callable[[int], None]:
        """A callback that adds bytes to `rec`'s `istio_tcp_<which>_bytes_total` at once, as
        ztunnel 1.24 does on every write of its copy loop (`copy.rs` → `increment_send`/
        `increment_recv`), so Prometheus sees a long-lived connection's bytes before it ends.
        `closed` then adds only what was not counted yet."""
        labels = labels_for(replace(rec, response_flags="-"))
        key = (id(rec), which)

        def add(n: int) -> None:
            self._counters.inc(which, labels, n)
            with self._live_lock:
                self._live[key] = self._live.get(key, 0) + n
        return add

    def closed(self, rec: ConnRecord, bytes_received: int, bytes_sent: int, error: str | None = None) -> None:
        """`bytes_received` is downstream→upstream, `bytes_sent` upstream→downstream (copy.rs).

        The byte counters keep the labels of the open (flag `-`); the closed counter
        takes the record's final flag. The log un-flips the bytes for the source
        reporter ("Istio flips the metric for source", istio#32399).
        """
        self._counters.inc("closed", labels_for(rec), 1)
        open_labels = labels_for(replace(rec, response_flags="-"))
        with self._live_lock:
            live_received = self._live.pop((id(rec), "received"), 0)
            live_sent = self._live.pop((id(rec), "sent"), 0)
        self._counters.inc("received", open_labels, max(0, bytes_received - live_received))
        self._counters.inc("sent", open_labels, max(0, bytes_sent - live_sent))
        if rec.reporter == "source":
            log_sent, log_recv = bytes_received, bytes_sent
        else:
            log_sent, log_recv = bytes_sent, bytes_received
        extra: dict[str, object] = {"bytes_sent": log_sent, "bytes_recv": log_recv,
                                    "duration": f"{int((time.monotonic() - rec.started) * 1000)}ms"}
        if error:
            extra["error"] = error
        self._access("error" if error else "info", "connection complete", rec, extra)

    def failed(self, src_addr: str, dst_addr: str, direction: Literal["inbound", "outbound"],
               error: str) -> None:
        """`log_early_deny`: refused before a connection record exists (e.g. HBONE 400)."""
        self._write("warn", {"src.addr": src_addr, "dst.addr": dst_addr, "direction": direction,
                             "error": error, "message": "connection failed"})

    def exposition(self) -> tuple[str, bytes]:
        """(Content-Type, body) of GET /metrics."""
        return CONTENT_TYPE, openmetrics(self._counters.families())

    async def serve_metrics(self, sock: socket.socket) -> None:
        """Serve `/metrics` on an already-listening socket until cancelled (ztunnel makes
        it in the node netns and hands it over)."""
        await metrics_server(self.exposition, sock)

    # --- access log ---------------------------------------------------------------------
    def _access(self, level: LogLevel, message: str, rec: ConnRecord, extra: dict[str, object]) -> None:
        if _LEVELS[level] < _LEVELS[self.log_level]:
            return
        labels = labels_for(rec)
        mtls = rec.security == "mutual_tls"

        def known(key: str) -> str | None:
            return labels[key] if labels[key] != UNKNOWN else None

        entry: dict[str, object | None] = {
            "src.addr": rec.src_addr,
            # the pod name, falling back to the canonical service (ConnectionResult::new)
            "src.workload": rec.src.name if rec.src else None,
            "src.namespace": known("source_workload_namespace"),
            "src.identity": labels["source_principal"] if mtls and known("source_principal") else None,
            "dst.addr": rec.dst_addr, "dst.hbone_addr": rec.hbone_addr,
            "dst.service": known("destination_service"),
            "dst.workload": rec.dst.name if rec.dst else None,
            "dst.namespace": known("destination_workload_namespace"),
            "dst.identity": (labels["destination_principal"]
                             if mtls and known("destination_principal") else None),
            "direction": rec.direction, **extra, "message": message,
        }
        self._write(level, entry)

    def _write(self, level: LogLevel, fields: dict[str, object | None]) -> None:
        """One line of ztunnel's JSON log: level, time, scope, then the event's fields."""
        if _LEVELS[level] < _LEVELS[self.log_level]:
            return
        head = {"level": level,
                "time": datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "scope": "access"}
        line = json.dumps({**head, **{k: v for k, v in fields.items() if v is not None}},
                          separators=(",", ":"))
        with self._log_lock:
            self.log_stream.write(line + "\n")
            self.log_stream.flush()
