"""What Envoy's HTTP connection manager and router do to headers, with istiod's settings.

- **Downstream request** (HCM): `x-request-id` is generated (a UUID4) when the request has
  none; `x-forwarded-proto` is set from the downstream transport when absent. Istio
  configures sidecars with `use_remote_address: false` (`PILOT_SIDECAR_USE_REMOTE_ADDRESS`
  defaults to false), so Envoy does **not** append the client to `x-forwarded-for`: in-mesh
  access logs show `"-"` there unless the app sent one.
- **Upstream request** (router): hop-by-hop headers are dropped; `x-envoy-attempt-count`
  carries the try number (Istio sets `include_request_attempt_count` on virtual hosts).
- **Response** (router): `x-envoy-upstream-service-time` is the upstream's time in whole
  milliseconds; Envoy's own local replies carry none.
- **Inbound over mTLS**: `x-forwarded-client-cert` with `By=<local SAN>;Hash=<sha256 of the
  peer certificate>;Subject="";URI=<peer SAN>` (Istio's sidecar inbound uses
  `APPEND_FORWARD` with Subject, URI and DNS details).
- **Metadata exchange over HTTP**: a sidecar sends its node metadata in
  `x-envoy-peer-metadata`/`x-envoy-peer-metadata-id` on requests and responses, and strips
  the peer's on the way in. Real Envoy base64-encodes a protobuf Struct; netlab encodes the
  same fields as base64 JSON (the peer is another netlab proxy, never a real Envoy).

Sources: Envoy's `config/http_conn_man/headers` docs; istio@1.24.0
`pilot/pkg/networking/core/listener.go`, `listener_inbound.go`, `pilot/pkg/features`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid

from netlab import mesh
from netlab.dataplane.envoy.stats import PeerInfo
from netlab.dataplane.http1 import Header, Request, Response

REQUEST_ID = "x-request-id"
FORWARDED_PROTO = "x-forwarded-proto"
FORWARDED_FOR = "x-forwarded-for"
ATTEMPT_COUNT = "x-envoy-attempt-count"
UPSTREAM_SERVICE_TIME = "x-envoy-upstream-service-time"
CLIENT_CERT = "x-forwarded-client-cert"
PEER_METADATA = "x-envoy-peer-metadata"
PEER_METADATA_ID = "x-envoy-peer-metadata-id"
_MX = frozenset({PEER_METADATA, PEER_METADATA_ID})


def _without(headers: list[Header], names: set[str] | frozenset[str]) -> list[Header]:
    return [(k, v) for k, v in headers if k.lower() not in names]


def downstream_request(req: Request, *, tls: bool) -> Request:
    """The HCM's edits to a request as it arrives (before routing); returns `req`, edited."""
    if req.header(REQUEST_ID) is None:
        req.headers.append((REQUEST_ID, str(uuid.uuid4())))
    if req.header(FORWARDED_PROTO) is None:
        req.headers.append((FORWARDED_PROTO, "https" if tls else "http"))
    return req


def upstream_request(req: Request, attempt: int, extra: list[Header] | None = None) -> Request:
    """The request the router sends on try number `attempt` (1-based)."""
    headers = _without(req.end_to_end(), {ATTEMPT_COUNT})
    headers.append((ATTEMPT_COUNT, str(attempt)))
    headers += extra or []
    return Request(method=req.method, target=req.target, headers=headers, body=req.body,
                   body_size=req.body_size, http_version=req.http_version)


def downstream_response(resp: Response, upstream_ms: int | None) -> Response:
    """The upstream response as the client gets it: hop-by-hop dropped, service time added."""
    headers = _without(resp.end_to_end(), {UPSTREAM_SERVICE_TIME})
    if upstream_ms is not None:
        headers.append((UPSTREAM_SERVICE_TIME, str(upstream_ms)))
    return Response(status=resp.status, headers=headers, body=resp.body, reason=resp.reason)


def client_cert_header(local_san: str, peer_san: str, peer_cert_der: bytes) -> str:
    """One XFCC element, as an inbound sidecar sets it for an mTLS peer."""
    digest = hashlib.sha256(peer_cert_der).hexdigest()
    return f'By={local_san};Hash={digest};Subject="";URI={peer_san}'


def append_client_cert(req: Request, element: str) -> None:
    """APPEND_FORWARD: keep what came, add ours."""
    old = req.header(CLIENT_CERT)
    req.headers[:] = _without(req.headers, {CLIENT_CERT})
    req.headers.append((CLIENT_CERT, f"{old},{element}" if old else element))


# -- metadata exchange over HTTP headers ------------------------------------------------
def mx_headers(node_id: str, me: PeerInfo) -> list[Header]:
    raw = json.dumps(me.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    return [(PEER_METADATA_ID, node_id), (PEER_METADATA, base64.b64encode(raw).decode())]


def take_mx(headers: list[Header]) -> tuple[list[Header], PeerInfo | None]:
    """The headers without the peer's MX ones, and what the peer said about itself."""
    found = next((v for k, v in headers if k.lower() == PEER_METADATA), None)
    rest = _without(headers, _MX)
    if found is None:
        return rest, None
    try:
        data = json.loads(base64.b64decode(found, validate=True))
    except (ValueError, binascii.Error):
        return rest, None
    return rest, PeerInfo.from_dict(data) if isinstance(data, dict) else None


def node_id(kind: str, ip: str, pod: str, namespace: str) -> str:
    """Envoy's node id as istio-agent builds it: `sidecar~10.1.0.5~sleep-0.ns~ns.svc.cluster.local`."""
    return f"{kind}~{ip}~{pod}.{namespace}~{namespace}.svc.{mesh.DNS_DOMAIN}"
