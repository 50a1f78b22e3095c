"""ztunnel's TCP metrics and access log, with the label set Kiali and the labs read (§8, §10).

The labs reproduce Kiali bugs that hinge on *which reporter* emits *which labels*, so the
series here carry the full Istio label set, `unknown` for anything missing, and the
constant `app="ztunnel"`. A custom collector (not `prometheus_client.Counter`) keeps the
exposition exactly as ztunnel's: the four `*_total` counters and no `_created` samples,
without touching prometheus_client's process-wide settings. Peers are the snapshot's
`Workload`s, whose canonical service and revision follow Istio's label precedence.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator, Literal, TextIO

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from netlab import mesh
from netlab.dataplane.proxy.admin import metrics_server
from netlab.snapshot import Workload

UNKNOWN = "unknown"

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
    "app",
)

# Exposed name (without `_total`, which CounterMetricFamily appends) and help text.
METRICS = {
    "opened": ("istio_tcp_connections_opened", "The total number of TCP connections opened"),
    "closed": ("istio_tcp_connections_closed", "The total number of TCP connections closed"),
    "sent": ("istio_tcp_sent_bytes", "The size of total bytes sent during response in case of a TCP connection"),
    "received": ("istio_tcp_received_bytes", "The size of total bytes received during request in case of a TCP connection"),
}


@dataclass
class ConnRecord:
    """One proxied connection, seen by one ztunnel in one direction."""

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


def _v(value: str | None) -> str:
    return value if value else UNKNOWN


def _side(prefix: str, w: Workload | None) -> dict[str, str]:
    """ztunnel fills `*_app`/`*_version` from the canonical name/revision, not raw labels."""
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
    """The full §8 label set for one record; principals only when the hop was mTLS."""
    mtls = rec.security == "mutual_tls"
    out = {"reporter": rec.reporter, **_side("source", rec.src), **_side("destination", rec.dst),
           **_service(rec.dst_service),
           "source_principal": _v(rec.src_identity) if mtls else UNKNOWN,
           "destination_principal": _v(rec.dst_identity) if mtls else UNKNOWN,
           "request_protocol": "tcp", "response_flags": _v(rec.response_flags),
           "connection_security_policy": rec.security, "app": "ztunnel"}
    return {k: out[k] for k in LABELS}


class _Counters(Collector):
    """Thread-safe counter store yielded as counter families at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[str, ...], float]] = {k: {} for k in METRICS}

    def inc(self, metric: str, labels: dict[str, str], amount: float) -> None:
        key = tuple(labels[k] for k in LABELS)
        with self._lock:
            series = self._values[metric]
            series[key] = series.get(key, 0.0) + amount

    def collect(self) -> Iterator[CounterMetricFamily]:
        with self._lock:
            snapshot = {k: dict(v) for k, v in self._values.items()}
        for metric, (name, doc) in METRICS.items():
            fam = CounterMetricFamily(name, doc, labels=list(LABELS))
            for key, value in snapshot[metric].items():
                fam.add_metric(list(key), value)
            yield fam


class ZtunnelTelemetry:
    """Metrics plus JSON access log for one node's ztunnel."""

    def __init__(self, registry: CollectorRegistry, node: str, log_stream: TextIO) -> None:
        self.registry = registry
        self.node = node
        self.log_stream = log_stream
        self._counters = _Counters()
        registry.register(self._counters)
        self._started: dict[int, float] = {}
        self._log_lock = threading.Lock()

    def opened(self, rec: ConnRecord) -> None:
        self._started[id(rec)] = time.monotonic()
        self._counters.inc("opened", labels_for(rec), 1)
        self._log(rec, "connection opened", {})

    def closed(self, rec: ConnRecord, bytes_received: int, bytes_sent: int, error: str | None = None) -> None:
        """`bytes_received` is downstream→upstream (ztunnel's convention, §8)."""
        labels = labels_for(rec)
        self._counters.inc("closed", labels, 1)
        self._counters.inc("received", labels, bytes_received)
        self._counters.inc("sent", labels, bytes_sent)
        start = self._started.pop(id(rec), None)
        extra: dict[str, object] = {"bytes_sent": bytes_sent, "bytes_recv": bytes_received}
        if start is not None:
            extra["duration"] = f"{round((time.monotonic() - start) * 1000)}ms"
        if error:
            extra["error"] = error
        self._log(rec, "connection complete", extra)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def _log(self, rec: ConnRecord, message: str, extra: dict[str, object]) -> None:
        mtls = rec.security == "mutual_tls"
        entry: dict[str, object] = {
            "level": "info" if not extra.get("error") else "error",
            "time": datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "scope": "access", "message": message,
            "src.addr": rec.src_addr,
            "src.workload": rec.src.workload_name if rec.src else None,
            "src.namespace": rec.src.namespace if rec.src else None,
            "src.identity": rec.src_identity if mtls else None,
            "dst.addr": rec.dst_addr, "dst.hbone_addr": rec.hbone_addr,
            "dst.service": rec.dst_service,
            "dst.workload": rec.dst.workload_name if rec.dst else None,
            "dst.namespace": rec.dst.namespace if rec.dst else None,
            "dst.identity": rec.dst_identity if mtls else None,
            "direction": rec.direction, **extra,
        }
        line = json.dumps({k: v for k, v in entry.items() if v is not None}, separators=(",", ":"))
        with self._log_lock:
            self.log_stream.write(line + "\n")
            self.log_stream.flush()

    # --- serving /metrics --------------------------------------------------------------
    async def serve_metrics(self, sock: socket.socket) -> None:
        """Serve `/metrics` on an already-listening socket until cancelled.

        Taking a socket (not host/port) lets ztunnel create it inside the node netns.
        """
        await metrics_server(self.registry, sock)
