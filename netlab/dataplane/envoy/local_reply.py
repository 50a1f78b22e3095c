"""The replies Envoy makes itself when it cannot relay one: status, body, flags, details.

Why exact text: field reports are matched by their body and access-log line (istio#55472's
`upstream connect error or disconnect/reset before headers. reset reason: connection
termination`, 95 bytes), and a lab is judged on the bytes curl prints. The pieces:

- the body of an upstream failure is `upstream connect error or disconnect/reset before
  headers. ` + (`retried and the latest ` when the retry policy ran out) + `reset reason: `
  + the reset reason, + `, transport failure reason: <r>` when the transport said why;
- the response code details are `upstream_reset_before_response_started{<reason>[,<tfr>]}`
  with every space made `_` (Envoy's details never contain spaces);
- the flags: `UC` (the upstream closed or reset before a response), `UF` (the connect or
  TLS handshake failed), plus `URX` when retries ran out, `UH` (no healthy upstream, 503
  `no healthy upstream`), `NR` (no route: 404, empty body, `route_not_found`).

Sources: envoyproxy/envoy `source/common/router/router.cc` (`upstreamResetReasonDetails`,
`onUpstreamReset`), `source/common/http/utility.cc` (`resetReasonToString`); istio#45802 for a
real `503 UC upstream_reset_before_response_started{connection_termination}` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet

from netlab.dataplane.envoy import flags as F

# Envoy's reset reasons (Http::StreamResetReason → text), the ones a relay meets.
CONNECTION_FAILURE = "remote connection failure"  # TCP connect or TLS handshake failed
CONNECTION_TERMINATION = "connection termination"  # closed before the response head
REMOTE_RESET = "remote reset"
LOCAL_RESET = "local reset"
OVERFLOW = "overflow"
PROTOCOL_ERROR = "protocol error"

# Transport failure reasons as Envoy words them (Envoy 1.31/1.32, Istio 1.23/1.24).
# Newer Envoy (2025+) says `delayed connect error: Connection refused` instead of `111`.
CONNECT_REFUSED = "delayed connect error: 111"
CONNECT_UNREACHABLE = "delayed connect error: 113"
CONNECT_TIMEOUT = "connect timeout"
TLS_VERIFY_FAILED = "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end"
TLS_WRONG_VERSION = "TLS_error:|268435703:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER:TLS_error_end"

BODY_PREFIX = "upstream connect error or disconnect/reset before headers. "
NO_HEALTHY_UPSTREAM_BODY = "no healthy upstream"
CONTENT_TYPE = "text/plain"

# Reset reasons Istio's default retry policy retries (`connect-failure`, `refused-stream`,
# `unavailable`, `cancelled`; `retriable-status-codes` is about responses, not resets).
RETRIABLE_RESETS = frozenset({CONNECTION_FAILURE})


@dataclass(frozen=True)
class LocalReply:
    """One reply Envoy generated: what the client gets and what the access log says."""

    status: int
    body: bytes
    flags: FrozenSet[str]
    details: str
    transport_failure: str | None = None  # %UPSTREAM_TRANSPORT_FAILURE_REASON%

    @property
    def flag_text(self) -> str:
        return F.render(self.flags)

    def headers(self) -> list[tuple[str, str]]:
        """The reply's headers before framing (Envoy adds content-length and date itself)."""
        if not self.body:
            return []
        return [("content-type", CONTENT_TYPE)]


def _underscored(text: str) -> str:
    return "_".join(text.split(" "))


def upstream_reset(reason: str, transport_failure: str | None = None, *,
                   retried: bool = False) -> LocalReply:
    """503 for an upstream that failed before sending a response head.

    `retried`: the route's retry policy ran out (adds `URX` and the `retried and the
    latest ` wording). The flag follows the reason: a failed connect or handshake is `UF`,
    a connection that closed after it was up is `UC`, a stream reset `UR`.
    """
    full = reason + (f", transport failure reason: {transport_failure}" if transport_failure else "")
    lead = "retried and the latest reset reason: " if retried else "reset reason: "
    flag = {CONNECTION_FAILURE: F.UPSTREAM_CONNECTION_FAILURE,
            CONNECTION_TERMINATION: F.UPSTREAM_CONNECTION_TERMINATION,
            OVERFLOW: F.UPSTREAM_OVERFLOW}.get(reason, F.UPSTREAM_REMOTE_RESET)
    flags = {flag} | ({F.UPSTREAM_RETRY_LIMIT_EXCEEDED} if retried else set())
    detail = _underscored(reason) + (f",{_underscored(transport_failure)}" if transport_failure else "")
    return LocalReply(503, (BODY_PREFIX + lead + full).encode(), frozenset(flags),
                      f"upstream_reset_before_response_started{{{detail}}}", transport_failure)


def no_healthy_upstream() -> LocalReply:
    """A cluster with no endpoint to pick: 503 `no healthy upstream`, UH."""
    return LocalReply(503, NO_HEALTHY_UPSTREAM_BODY.encode(), frozenset({F.NO_HEALTHY_UPSTREAM}),
                      "no_healthy_upstream")


def route_not_found() -> LocalReply:
    """No virtual host or route matched: 404 with no body, NR."""
    return LocalReply(404, b"", frozenset({F.NO_ROUTE_FOUND}), "route_not_found")


def filter_chain_not_found() -> LocalReply:
    """A listener with no chain for the connection closes it: no response at all (code 0).

    Only the access log and the flags matter: the client sees its connection closed.
    """
    return LocalReply(0, b"", frozenset({F.NO_ROUTE_FOUND}), "filter_chain_not_found")
