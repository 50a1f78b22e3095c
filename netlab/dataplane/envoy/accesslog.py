"""Istio's default access log: the TEXT line of 1.23+ and its JSON form (mesh-facts-2 §D4).

Why the exact shape: labs and field reports are read line by line (`NR
filter_chain_not_found`, `UC ... PassthroughCluster ... allow_any`), so a line here must read
the same as a real sidecar's. The TEXT format, field by field (istio@1.24.0
`pilot/pkg/model/telemetry_logging.go`, `EnvoyTextLogFormat`):

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
    %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
    "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
    %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
    %REQUESTED_SERVER_NAME% %ROUTE_NAME%

(one line, single spaces). A value Envoy does not have prints `-`; for a TCP connection the
method, path and protocol are `-` and the code is 0. `%START_TIME%` is UTC with
milliseconds (`2021-09-11T10:53:13.360Z`); BYTES_* are body bytes for HTTP, stream bytes
for TCP; DURATION is whole milliseconds. In the JSON form a missing value is `null`
(Envoy's JSON formatter), keys are sorted as Envoy prints a Struct, and numbers stay numbers.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, TextIO

Encoding = Literal["TEXT", "JSON"]

# The JSON form's keys (istio@1.24.0 `EnvoyJSONLogFormatIstio`); `AccessEntry.values` fills them.
JSON_KEYS: tuple[str, ...] = (
    "start_time", "route_name", "method", "path", "protocol", "response_code", "response_flags",
    "response_code_details", "connection_termination_details", "bytes_received", "bytes_sent",
    "duration", "upstream_service_time", "x_forwarded_for", "user_agent", "request_id",
    "authority", "upstream_host", "upstream_cluster", "upstream_local_address",
    "downstream_local_address", "downstream_remote_address", "requested_server_name",
    "upstream_transport_failure_reason",
)


def start_time(epoch: float) -> str:
    """%START_TIME%'s default form: ISO 8601 UTC with milliseconds and `Z`."""
    t = datetime.fromtimestamp(epoch, timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass
class AccessEntry:
    """One access-log record: an HTTP exchange, or a TCP connection (method None)."""

    start: float  # time.time() when the request (or connection) began
    method: str | None = None
    path: str | None = None  # x-envoy-original-path if set, else :path
    protocol: str | None = None  # "HTTP/1.1"; None for TCP
    response_code: int = 0
    response_flags: str = "-"
    response_code_details: str | None = None
    connection_termination_details: str | None = None
    upstream_transport_failure_reason: str | None = None
    bytes_received: int = 0
    bytes_sent: int = 0
    duration_ms: int = 0
    upstream_service_time: str | None = None  # the x-envoy-upstream-service-time response header
    x_forwarded_for: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    authority: str | None = None
    upstream_host: str | None = None  # "ip:port"
    upstream_cluster: str | None = None  # "outbound|9090||prometheus.monitoring.svc.cluster.local"
    upstream_local_address: str | None = None
    downstream_local_address: str | None = None
    downstream_remote_address: str | None = None
    requested_server_name: str | None = None  # the SNI the downstream sent
    route_name: str | None = None  # "default", "allow_any"

    def finish(self, now: float | None = None) -> "AccessEntry":
        """Set the duration from `start` to now (whole milliseconds, as Envoy rounds down)."""
        self.duration_ms = int(((now if now is not None else time.time()) - self.start) * 1000)
        return self

    def values(self) -> dict[str, Any]:
        """The JSON form's keys → values (None where Envoy has nothing)."""
        v = {
            "start_time": start_time(self.start), "route_name": self.route_name,
            "method": self.method, "path": self.path, "protocol": self.protocol,
            "response_code": self.response_code, "response_flags": self.response_flags,
            "response_code_details": self.response_code_details,
            "connection_termination_details": self.connection_termination_details,
            "bytes_received": self.bytes_received, "bytes_sent": self.bytes_sent,
            "duration": self.duration_ms, "upstream_service_time": self.upstream_service_time,
            "x_forwarded_for": self.x_forwarded_for, "user_agent": self.user_agent,
            "request_id": self.request_id, "authority": self.authority,
            "upstream_host": self.upstream_host, "upstream_cluster": self.upstream_cluster,
            "upstream_local_address": self.upstream_local_address,
            "downstream_local_address": self.downstream_local_address,
            "downstream_remote_address": self.downstream_remote_address,
            "requested_server_name": self.requested_server_name,
            "upstream_transport_failure_reason": self.upstream_transport_failure_reason,
        }
        return {k: (None if v[k] == "" else v[k]) for k in JSON_KEYS}


def _d(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def text_line(e: AccessEntry) -> str:
    """The 1.23+ TEXT line, without the trailing newline."""
    return (f'[{start_time(e.start)}] "{_d(e.method)} {_d(e.path)} {_d(e.protocol)}" '
            f"{e.response_code} {_d(e.response_flags)} {_d(e.response_code_details)} "
            f'{_d(e.connection_termination_details)} "{_d(e.upstream_transport_failure_reason)}" '
            f"{e.bytes_received} {e.bytes_sent} {e.duration_ms} {_d(e.upstream_service_time)} "
            f'"{_d(e.x_forwarded_for)}" "{_d(e.user_agent)}" "{_d(e.request_id)}" '
            f'"{_d(e.authority)}" "{_d(e.upstream_host)}" {_d(e.upstream_cluster)} '
            f"{_d(e.upstream_local_address)} {_d(e.downstream_local_address)} "
            f"{_d(e.downstream_remote_address)} {_d(e.requested_server_name)} {_d(e.route_name)}")


def json_line(e: AccessEntry) -> str:
    return json.dumps(e.values(), sort_keys=True, separators=(",", ":"))


class AccessLog:
    """Writes entries to a stream (the proxy's stdout, i.e. the lab's log file), one a line."""

    def __init__(self, stream: TextIO, encoding: Encoding = "TEXT") -> None:
        self.stream = stream
        self.encoding = encoding
        self._lock = threading.Lock()

    def write(self, e: AccessEntry) -> None:
        line = text_line(e) if self.encoding == "TEXT" else json_line(e)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()
