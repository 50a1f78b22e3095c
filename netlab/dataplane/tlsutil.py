"""TLS contexts shaped like ztunnel's (mesh-facts §4), built from in-memory PEM.

Why contexts are built here and not ad hoc: every HBONE endpoint must agree on
TLS 1.3 only, ALPN `h2`, mandatory client certificates, no SNI, and honour
`SSLKEYLOGFILE` so a capture can be decrypted. Identity checks (URI SAN, trust
domain) are done right after the handshake by `identity.verify_*`, because
OpenSSL's hostname checking knows nothing about SPIFFE.

The key log can also be switched on for a running lab (`netlab trace --pcap`): a proxy
names its switch file at start (`follow_keylog_switch`, the file KEYLOG_SWITCH in the
lab's state dir, beside its config), and every MeshContext looks at it before each
handshake: when the file exists, the TLS secrets of that handshake are appended in the
NSS key log format to the path the file holds; when it is gone, they are not. One stat
per handshake. Real ztunnel and Envoy write no key log unless built or configured for
it (docs/events.md, "TLS key log").
"""

from __future__ import annotations

import os
import ssl
import tempfile
from typing import Any

HBONE_ALPN = "h2"


KEYLOG_SWITCH = "tls-keylog"  # in a lab's state dir: holds the key log path while on

_switch: str | None = None  # this process's switch file, when it follows one


def follow_keylog_switch(path: str | None) -> None:
    """Make every MeshContext of this process obey the switch file at `path`."""
    global _switch
    _switch = path


def _switched_keylog() -> str | None:
    """The key log path the switch names now, or None (no switch, or off)."""
    if _switch is None:
        return None
    try:
        with open(_switch) as f:
            return f.read().strip() or None
    except OSError:
        return None


class MeshContext(ssl.SSLContext):
    """An SSLContext that remembers which SPIFFE identity its certificate carries.

    The HBONE server needs its own trust domain to check clients, and Python's
    ssl module cannot return the local certificate, so it rides on the context.
    It also follows the process's key log switch (module docstring) before each
    handshake: asyncio, the HBONE pool and the CA all start TLS through wrap_bio or
    wrap_socket.
    """

    identity: str = ""
    _switched: str | None = None  # the key log path the switch set on this context

    def _follow_switch(self) -> None:
        if _switch is None:
            return
        want = _switched_keylog()
        if want == self._switched:
            return
        try:
            self.keylog_filename = want or os.environ.get("SSLKEYLOGFILE") or None  # type: ignore[assignment]
            self._switched = want
        except OSError:
            pass  # cannot open it (another user's dir): no key log, never a failed handshake

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._follow_switch()
        return super().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._follow_switch()
        return super().wrap_socket(*args, **kwargs)


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """`load_cert_chain` only reads files: stage the PEM in a private temp dir."""
    with tempfile.TemporaryDirectory(prefix="netlab-tls-") as d:
        cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)


def _keylog(ctx: ssl.SSLContext) -> None:
    path = os.environ.get("SSLKEYLOGFILE")
    if path:
        ctx.keylog_filename = path


def load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate and key given as PEM bytes (for contexts built elsewhere)."""
    _load_chain(ctx, cert_pem, key_pem)


def keylog(ctx: ssl.SSLContext) -> None:
    """Honour SSLKEYLOGFILE, so a capture of this context's sessions can be decrypted."""
    _keylog(ctx)


def _base(ctx: ssl.SSLContext, cert_pem: bytes | None, key_pem: bytes | None,
          root_pem: bytes, alpn: list[str]) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=root_pem.decode())
    if cert_pem is not None and key_pem is not None:
        _load_chain(ctx, cert_pem, key_pem)
    ctx.set_alpn_protocols(alpn)
    _keylog(ctx)


def mesh_server_context(cert_pem: bytes, key_pem: bytes, root_pem: bytes, identity: str,
                        alpn: list[str] | None = None) -> MeshContext:
    """Server side: requires and chain-verifies a client certificate."""
    ctx = MeshContext(ssl.PROTOCOL_TLS_SERVER)
    _base(ctx, cert_pem, key_pem, root_pem, alpn or [HBONE_ALPN])
    ctx.identity = identity
    return ctx


def mesh_client_context(cert_pem: bytes | None, key_pem: bytes | None, root_pem: bytes,
                        identity: str, alpn: list[str] | None = None) -> MeshContext:
    """Client side: verifies the chain, no hostname check (there is no SNI in HBONE)."""
    ctx = MeshContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    _base(ctx, cert_pem, key_pem, root_pem, alpn or [HBONE_ALPN])
    ctx.identity = identity
    return ctx


def require_alpn(ssl_object: ssl.SSLObject | ssl.SSLSocket, want: str = HBONE_ALPN) -> None:
    got = ssl_object.selected_alpn_protocol()
    if got != want:
        raise ssl.SSLError(f"ALPN negotiated {got!r}, HBONE needs {want!r}")
