"""The lab CA: a persisted root, certificate issuance, and istiod's node-authorised signer.

Real ztunnel authenticates to istiod with its own identity and asks for a
*different* one (impersonation); istiod grants it only if a pod with that service
account runs on the caller's node (istio `security/pkg/server/ca/node_auth.go`).
This module reproduces that check over a small mTLS HTTP/1.1 API:

    POST /v1/certificate   (client cert = ztunnel bootstrap cert)
    {"identity": "spiffe://<td>/ns/<ns>/sa/<sa>", "csr": "<PEM>", "ttl_seconds": 86400}
    200 {"certificate": "<leaf PEM>", "root": "<root PEM>"}
    403 request impersonation authentication failure
    400 <reason>

The caller's node is the URI SAN `netlab://node/<node>` in its bootstrap cert (next
to `spiffe://<td>/ns/istio-system/sa/ztunnel`); the subject CN repeats it for
humans only and is never trusted.

Run: `python -m netlab.dataplane.ca --dir D --listen IP:PORT --pods-by-node FILE.json`.
The JSON file is `{"node-1": [["ns", "sa"], ...]}` and is re-read on every request,
so the lab builder can add pods while the CA runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import fcntl
import json
import os
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netlab import mesh
from netlab.dataplane import tlsutil
from netlab.dataplane.proxy import lifecycle
from netlab.dataplane.identity import (
    NODE_URI_PREFIX, ZTUNNEL_NAMESPACE, ZTUNNEL_SERVICE_ACCOUNT, Identity, IdentityError,
    WorkloadCert, node_of, pod_of, pod_uri, spiffe_identity, verify_server_identity)

DEFAULT_TTL = 24 * 3600
IMPERSONATION_FAILURE = "request impersonation authentication failure"
CA_PATH = "/v1/certificate"
ISTIOD_SA = (mesh.ROOT_NAMESPACE, "istiod")
CA_ALPN = "http/1.1"
MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024  # request line and headers; a real request needs a few hundred bytes
READ_TIMEOUT = 10.0  # seconds for a client to send its whole request (TLS handshake apart)
FETCH_TIMEOUT = 10.0  # seconds for one certificate request, connect to answer
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
           413: "Content Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error"}


class BadRequest(Exception):
    """A request the CA answers with a 4xx and closes: says which status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


class LabCA:
    """A self-signed ECDSA P-256 root kept in `directory` (root-cert.pem, root-key.pem).

    Several processes may open the same directory at once: creation happens under
    an exclusive flock, so they all end up with the one root.
    """

    def __init__(self, directory: str | os.PathLike[str], trust_domain: str = mesh.DEFAULT_TRUST_DOMAIN) -> None:
        self.dir = Path(directory)
        self.trust_domain = trust_domain
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (self.dir / "root-cert.pem").exists():
                self._create_root()
        self.root_pem = (self.dir / "root-cert.pem").read_bytes()
        self._root = x509.load_pem_x509_certificate(self.root_pem)
        key = serialization.load_pem_private_key((self.dir / "root-key.pem").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key = key

    def _create_root(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netlab"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "netlab lab root")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                               critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        fd = os.open(self.dir / "root-key.pem.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_key_pem(key))
        os.replace(self.dir / "root-key.pem.tmp", self.dir / "root-key.pem")
        (self.dir / "root-cert.pem.tmp").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        os.replace(self.dir / "root-cert.pem.tmp", self.dir / "root-cert.pem")

    def identity(self, namespace: str, service_account: str) -> Identity:
        return Identity(self.trust_domain, namespace, service_account)

    def sign(self, public_key: ec.EllipticCurvePublicKey, uris: list[str], ttl_seconds: int,
             common_name: str = "") -> bytes:
        """A leaf for `public_key` with the given URI SANs. Only P-256 keys are accepted."""
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise ValueError("workload keys must be ECDSA P-256")
        now = _now()
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
                                     if common_name else []))
             .issuer_name(self._root.subject).public_key(public_key)
             .serial_number(x509.random_serial_number())
             .not_valid_before(now).not_valid_after(now + dt.timedelta(seconds=ttl_seconds))
             .add_extension(x509.SubjectAlternativeName(
                 [x509.UniformResourceIdentifier(u) for u in uris]), critical=bool(not common_name))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                            critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                   ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                            critical=False))
        return b.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def issue_workload(self, namespace: str, service_account: str,
                       ttl_seconds: int = DEFAULT_TTL) -> WorkloadCert:
        """Issue directly, bypassing node authorisation (for tests and the lab builder)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.sign(key.public_key(), [str(self.identity(namespace, service_account))], ttl_seconds)
        return WorkloadCert.from_pem(cert, _key_pem(key), self.root_pem)

    def issue_bootstrap(self, node: str, ttl_seconds: int = DEFAULT_TTL) -> tuple[bytes, bytes]:
        """ztunnel's own cert for `node`: (cert_pem, key_pem). Never a workload identity."""
        key = ec.generate_private_key(ec.SECP256R1())
        zt = str(self.identity(ZTUNNEL_NAMESPACE, ZTUNNEL_SERVICE_ACCOUNT))
        cert = self.sign(key.public_key(), [zt, NODE_URI_PREFIX + node], ttl_seconds,
                         common_name=f"ztunnel {node}")
        return cert, _key_pem(key)

    def issue_pod_bootstrap(self, namespace: str, pod: str, service_account: str,
                            ttl_seconds: int = DEFAULT_TTL) -> tuple[bytes, bytes]:
        """A pod's own bootstrap (its service-account token's stand-in): (cert_pem, key_pem).

        Why: a proxy that runs *as* a pod (a waypoint, a sidecar) asks istiod for its own
        identity with its own token; there is no impersonation and so no node check.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.sign(key.public_key(), [pod_uri(namespace, pod, service_account)], ttl_seconds,
                         common_name=f"pod {namespace}/{pod}")
        return cert, _key_pem(key)

    def authorize(self, caller: x509.Certificate, requested: Identity,
                  pods_by_node: dict[str, list[list[str]]]) -> None:
        """istiod's node authoriser. Raises PermissionError with the one public message.

        A pod-bound caller gets exactly its own service account's identity, as istiod
        grants a pod the identity its token names; anything else is impersonation.
        """
        pod = pod_of(caller)
        if pod is not None:
            if requested != self.identity(pod[0], pod[2]) or requested.is_ztunnel:
                raise PermissionError(IMPERSONATION_FAILURE)
            return
        try:
            who = spiffe_identity(caller)
        except IdentityError:
            raise PermissionError(IMPERSONATION_FAILURE) from None
        node = node_of(caller)
        allowed = (
            who == self.identity(ZTUNNEL_NAMESPACE, ZTUNNEL_SERVICE_ACCOUNT)
            and node is not None
            and requested.trust_domain == self.trust_domain
            and not requested.is_ztunnel
            and [requested.namespace, requested.service_account]
            in [list(p) for p in pods_by_node.get(node, [])])
        if not allowed:
            raise PermissionError(IMPERSONATION_FAILURE)


class CAServer:
    """The CA as a service: mTLS HTTP/1.1, one request per connection.

    Every connection gets exactly one answer and is then closed: a malformed request
    (a body that is not a JSON object, fields of the wrong type, a header block over
    MAX_HEAD) is a 4xx, a client that sends too slowly is a 408 after `read_timeout`,
    and a bug is a 500 with the error logged, never a task dying with the socket open.
    """

    def __init__(self, ca: LabCA, pods_by_node_file: str | os.PathLike[str],
                 max_ttl_seconds: int = DEFAULT_TTL, read_timeout: float = READ_TIMEOUT) -> None:
        self.ca = ca
        self.read_timeout = read_timeout
        self.pods_file = Path(pods_by_node_file)
        self.max_ttl = max_ttl_seconds
        key = ec.generate_private_key(ec.SECP256R1())
        cert = ca.sign(key.public_key(), [str(ca.identity(*ISTIOD_SA))], self.max_ttl)
        self.ssl = tlsutil.mesh_server_context(cert, _key_pem(key), ca.root_pem,
                                               str(ca.identity(*ISTIOD_SA)), alpn=[CA_ALPN])
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port, ssl=self.ssl, limit=MAX_HEAD,
                                                  ssl_handshake_timeout=self.read_timeout)
        addr = self._server.sockets[0].getsockname()
        return addr[0], addr[1]

    @property
    def address(self) -> str:
        """"ip:port" it listens on, once started."""
        assert self._server is not None
        ip, port = self._server.sockets[0].getsockname()[:2]
        return f"{ip}:{port}"

    async def close(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    def _pods(self) -> dict[str, list[list[str]]]:
        data = json.loads(self.pods_file.read_text())
        if not isinstance(data, dict):
            raise ValueError("pods-by-node file must map node -> [[ns, sa], ...]")
        return data

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._handle(reader, writer), self.read_timeout)
        except asyncio.TimeoutError:
            status, body = 408, b"request not received in time"
        except BadRequest as e:
            status, body = e.status, str(e).encode()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()  # the client went away: nobody to answer
            return
        except Exception as e:  # noqa: BLE001 - a bug must still answer and close
            print(f"CA: internal error on a request: {type(e).__name__}: {e}", flush=True)
            status, body = 500, b"internal error"
        ctype = "application/json" if status == 200 else "text/plain"
        writer.write(f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        try:
            await asyncio.wait_for(writer.drain(), self.read_timeout)
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), self.read_timeout)
        except (ConnectionError, ssl.SSLError, asyncio.TimeoutError):
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> tuple[int, bytes]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise BadRequest(431, f"request header block over {MAX_HEAD} bytes") from None
        lines = head.decode("latin-1").split("\r\n")
        first = lines[0].split(" ")
        if len(first) != 3 or not first[2].startswith("HTTP/1."):
            raise BadRequest(400, "bad request line")
        method, path, _ = first
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if (method, path) != ("POST", CA_PATH):
            return 404, b"not found"
        raw_length = headers.get("content-length", "0")
        if not raw_length.isdigit():
            raise BadRequest(400, "bad content-length")
        length = int(raw_length)
        if length > MAX_BODY:
            raise BadRequest(413, f"body over {MAX_BODY} bytes")
        if length == 0:
            raise BadRequest(400, "empty body")
        req = _request(await reader.readexactly(length))
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        caller = x509.load_der_x509_certificate(der)
        try:
            requested = Identity.parse(req["identity"])
            csr = x509.load_pem_x509_csr(req["csr"].encode())
        except (IdentityError, ValueError) as e:
            return 400, f"bad request: {e}".encode()
        if not csr.is_signature_valid:
            return 400, b"bad request: CSR signature invalid"
        try:
            self.ca.authorize(caller, requested, self._pods())
        except PermissionError as e:
            return 403, str(e).encode()
        ttl = min(req["ttl_seconds"] or self.max_ttl, self.max_ttl)
        try:
            leaf = self.ca.sign(csr.public_key(), [str(requested)], ttl)  # type: ignore[arg-type]
        except ValueError as e:
            return 400, f"bad request: {e}".encode()
        return 200, json.dumps({"certificate": leaf.decode(), "root": self.ca.root_pem.decode()}).encode()


def _request(body: bytes) -> dict[str, Any]:
    """The request body as the API defines it, or BadRequest(400) naming what is wrong."""
    try:
        req = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise BadRequest(400, "body is not JSON") from None
    if not isinstance(req, dict):
        raise BadRequest(400, "body must be a JSON object: {\"identity\", \"csr\", \"ttl_seconds\"}")
    for key in ("identity", "csr"):
        if not isinstance(req.get(key), str):
            raise BadRequest(400, f"{key} must be a string")
    ttl = req.get("ttl_seconds")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
        raise BadRequest(400, "ttl_seconds must be a positive integer or null")
    return {"identity": req["identity"], "csr": req["csr"], "ttl_seconds": ttl}


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON: refuse them instead of computing with them."""
    raise ValueError(f"{name} is not JSON")


class CAError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"CA answered {status}: {text}")
        self.status, self.text = status, text


class CertClient:
    """ztunnel's side of the CA API: authenticates with the bootstrap cert, keeps keys local."""

    def __init__(self, ca_url: str, bootstrap_cert_pem: bytes, bootstrap_key_pem: bytes,
                 root_pem: bytes, trust_domain: str = mesh.DEFAULT_TRUST_DOMAIN,
                 ttl_seconds: int | None = None) -> None:
        u = urlsplit(ca_url)
        if u.scheme != "https" or not u.hostname or not u.port:
            raise ValueError(f"CA URL must be https://IP:PORT, got {ca_url!r}")
        self.host, self.port = u.hostname, u.port
        self.trust_domain = trust_domain
        self.ttl = ttl_seconds
        self.root_pem = root_pem
        self.ssl = tlsutil.mesh_client_context(bootstrap_cert_pem, bootstrap_key_pem, root_pem,
                                               "", alpn=[CA_ALPN])

    async def fetch(self, namespace: str, service_account: str) -> WorkloadCert:
        want = Identity(self.trust_domain, namespace, service_account)
        if want.is_ztunnel:
            raise IdentityError("ztunnel's own identity is never requested as a workload identity")
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(want))]),
                              critical=True)
               .sign(key, hashes.SHA256()))
        body = json.dumps({"identity": str(want), "ttl_seconds": self.ttl,
                           "csr": csr.public_bytes(serialization.Encoding.PEM).decode()}).encode()
        status, text = await self._post(body)
        if status != 200:
            raise CAError(status, text.decode(errors="replace"))
        resp = json.loads(text)
        cert = WorkloadCert.from_pem(resp["certificate"].encode(), _key_pem(key), self.root_pem)
        if cert.identity != want:
            raise IdentityError(f"CA issued {cert.identity}, asked for {want}")
        return cert

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        # Bounded: CertManager runs only a couple of fetch workers, so one request hung on
        # a stuck CA would otherwise stall every certificate (and every new HBONE tunnel).
        async with asyncio.timeout(FETCH_TIMEOUT):
            return await self._post_once(body)

    async def _post_once(self, body: bytes) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        try:
            verify_server_identity(writer.get_extra_info("ssl_object"),
                                   str(Identity(self.trust_domain, *ISTIOD_SA)))
            writer.write(f"POST {CA_PATH} HTTP/1.1\r\nHost: {self.host}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), payload


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m netlab.dataplane.ca", description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True, help="CA directory (root-cert.pem, root-key.pem)")
    p.add_argument("--listen", required=True, help="IP:PORT")
    p.add_argument("--pods-by-node", required=True, help='JSON {"node": [["ns","sa"], ...]}')
    p.add_argument("--trust-domain", default=mesh.DEFAULT_TRUST_DOMAIN)
    p.add_argument("--max-ttl", type=int, default=DEFAULT_TTL, help="seconds")
    a = p.parse_args(argv)
    host, _, port = a.listen.rpartition(":")

    async def start() -> CAServer:
        server = CAServer(LabCA(a.dir, a.trust_domain), a.pods_by_node, a.max_ttl)
        await server.start(host.strip("[]"), int(port))
        return server

    lifecycle.run(start, on_ready=lambda s: print(f"netlab CA listening on {s.address}",
                                                  flush=True))


if __name__ == "__main__":
    main()
