"""TLS between sidecars as istiod configures Envoy: `ISTIO_MUTUAL` (mesh-facts-2 §D2, §D3).

- **Client** (auto-mTLS to an endpoint labelled `security.istio.io/tlsMode=istio`): the
  pod's own workload certificate, SNI = the cluster name `outbound_.<port>_._.<fqdn>`,
  TLS 1.2-1.3, and an ALPN list per upstream protocol: HTTP/1.1 `[istio-http/1.1, istio,
  http/1.1]` (HTTP/1.0 and h2 likewise), TCP `[istio-peer-exchange, istio]`. The server's
  URI SAN must be one of the destination service's accounts.
- **Server** (inbound chains): a client certificate is required and must chain to the mesh
  root with a SAN in our trust domain; TLS 1.2-1.3 with Istio's cipher list; ALPN
  `[h2, http/1.1]` on HTTP chains, `[istio-peer-exchange, h2, http/1.1]` on TCP chains.
- **Inbound chain match**: PERMISSIVE's mTLS chains match the client ALPNs `istio`,
  `istio-peer-exchange`, `istio-http/1.0`, `istio-http/1.1`, `istio-h2`; STRICT's HTTP chain
  on an auto-detected port matches `istio-http/*` and `istio-h2`.

Sources: istio@1.24.0 `pilot/pkg/networking/core/cluster_tls.go`,
`pilot/pkg/xds/filters/filters.go` (`istio.alpn`), `pilot/pkg/networking/core/filterchain_options.go`,
`pilot/pkg/security/authn/utils/utils.go` (TLS params, ciphers).
"""

from __future__ import annotations

import ssl
from typing import Iterable, Sequence

from cryptography import x509

from netlab.dataplane import identity as ident
from netlab.dataplane import tlsutil
from netlab.dataplane.envoy import local_reply as lr

ALPN_HTTP10 = ("istio-http/1.0", "istio", "http/1.0")
ALPN_HTTP11 = ("istio-http/1.1", "istio", "http/1.1")
ALPN_H2 = ("istio-h2", "istio", "h2")
ALPN_TCP = ("istio-peer-exchange", "istio")
PEER_EXCHANGE = "istio-peer-exchange"

SERVER_ALPN_HTTP = ("h2", "http/1.1")
SERVER_ALPN_TCP = ("istio-peer-exchange", "h2", "http/1.1")

MTLS_ALPNS = frozenset({"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1",
                        "istio-h2"})
MTLS_HTTP_ALPNS = frozenset({"istio-http/1.0", "istio-http/1.1", "istio-h2"})

# Istio's default TLS 1.2 cipher suites for sidecars (TLS 1.3 suites are not configurable).
CIPHERS = ":".join(("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
                    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
                    "AES256-GCM-SHA384", "AES128-GCM-SHA256"))


def sni(port: int, fqdn: str) -> str:
    """The SNI a sidecar sends: its cluster name with `|` made `_`."""
    return f"outbound_.{port}_._.{fqdn}"


def client_alpn(protocol: str) -> tuple[str, ...]:
    """`istio.alpn`'s override per upstream protocol; TCP clusters keep the cluster default."""
    return {"http/1.0": ALPN_HTTP10, "http/1.1": ALPN_HTTP11, "h2": ALPN_H2}.get(protocol, ALPN_TCP)


def _context(cert: ident.WorkloadCert, server: bool, alpn: Sequence[str]) -> tlsutil.MeshContext:
    ident.require_workload(cert.identity, ident.uri_sans(x509.load_pem_x509_certificate(cert.cert_pem)))
    ctx = tlsutil.MeshContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(CIPHERS)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not server:
        ctx.check_hostname = False  # SPIFFE SANs are checked after the handshake
    ctx.load_verify_locations(cadata=cert.root_pem.decode())
    tlsutil.load_chain(ctx, cert.cert_pem, cert.key_pem)
    ctx.set_alpn_protocols(list(alpn))
    tlsutil.keylog(ctx)
    ctx.identity = str(cert.identity)
    return ctx


def server_context(cert: ident.WorkloadCert, alpn: Sequence[str]) -> tlsutil.MeshContext:
    """An inbound chain's DownstreamTlsContext: client certificate required."""
    return _context(cert, True, alpn)


def client_context(cert: ident.WorkloadCert, alpn: Sequence[str]) -> tlsutil.MeshContext:
    """An outbound cluster's UpstreamTlsContext (SNI is given per connection)."""
    return _context(cert, False, alpn)


def verify_server(ssl_object: ssl.SSLObject | ssl.SSLSocket, expected: Iterable[str]) -> ident.Identity:
    """The client's SAN check: the server must prove one of `expected` (the service's accounts)."""
    got = ident.peer_identity(ssl_object)
    allowed = set(expected)
    if allowed and str(got) not in allowed:
        raise ident.IdentityMismatch(
            f"server identity {got} is none of {', '.join(sorted(allowed))}")
    return got


def verify_client(ssl_object: ssl.SSLObject | ssl.SSLSocket, trust_domain: str) -> ident.Identity:
    """The server's check: the chain was verified by OpenSSL; the SAN must be in our trust domain."""
    return ident.verify_client_trust_domain(ssl_object, trust_domain)


def transport_failure(e: BaseException) -> str:
    """Envoy's %UPSTREAM_TRANSPORT_FAILURE_REASON% for a failed handshake (BoringSSL's words)."""
    if isinstance(e, (ssl.SSLCertVerificationError, ident.IdentityError)):
        return lr.TLS_VERIFY_FAILED
    if isinstance(e, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(e):
        return lr.TLS_WRONG_VERSION
    if isinstance(e, ssl.SSLError):
        return f"TLS_error:|{e.reason or 'handshake failure'}:TLS_error_end"
    if isinstance(e, ConnectionRefusedError):
        return lr.CONNECT_REFUSED
    if isinstance(e, TimeoutError):
        return lr.CONNECT_TIMEOUT
    if isinstance(e, OSError) and e.errno:
        return f"delayed connect error: {e.errno}"
    return "connection closed during handshake"
