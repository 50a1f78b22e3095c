"""SPIFFE identities, workload certificates, and the per-node certificate manager.

ztunnel holds one certificate per service account running on its node and never
uses its own (bootstrap) identity for workload mTLS (mesh-facts §5). This module
keeps that rule in one place: `Identity.is_ztunnel` and `require_workload` are what
every TLS helper calls before it puts a certificate on the wire.

The manager refreshes each certificate at half-life. Rotation builds a *new*
`ssl.SSLContext`; live TLS sessions keep the context they were made with, so a
rotation never touches a connection that is already up.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Awaitable, Callable

from cryptography import x509

from netlab import mesh
from netlab.dataplane import tlsutil

log = logging.getLogger(__name__)

ZTUNNEL_NAMESPACE = mesh.ROOT_NAMESPACE
ZTUNNEL_SERVICE_ACCOUNT = "ztunnel"
NODE_URI_PREFIX = "netlab://node/"
# A pod-bound bootstrap (the stand-in for a pod's projected service-account token):
# `netlab://pod/<ns>/<pod>/sa/<sa>`. It names no SPIFFE identity, so it can never be
# used for mTLS; the CA issues exactly the pod's own identity for it (no impersonation).
POD_URI_PREFIX = "netlab://pod/"


class IdentityError(Exception):
    """A certificate or peer identity is not acceptable for what it is used for."""


class IdentityMismatch(IdentityError):
    """The peer proved an identity other than the one we expected (client-side check, §4)."""


@dataclass(frozen=True, order=True)
class Identity:
    """`spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`."""

    trust_domain: str
    namespace: str
    service_account: str

    def __str__(self) -> str:
        return mesh.spiffe_uri(self.trust_domain, self.namespace, self.service_account)

    @classmethod
    def parse(cls, uri: str) -> "Identity":
        if not uri.startswith(mesh.SPIFFE_SCHEME):
            raise IdentityError(f"not a SPIFFE URI: {uri!r}")
        parts = mesh.parse_spiffe_uri(uri)
        if parts is None:
            raise IdentityError(f"not a spiffe://<td>/ns/<ns>/sa/<sa> URI: {uri!r}")
        return cls(*parts)

    @property
    def is_ztunnel(self) -> bool:
        return (self.namespace, self.service_account) == (ZTUNNEL_NAMESPACE, ZTUNNEL_SERVICE_ACCOUNT)


def require_workload(identity: Identity, uris: list[str] | None = None) -> None:
    """Refuse the ztunnel identity (or any node-bound bootstrap cert) for workload mTLS."""
    if identity.is_ztunnel or any(u.startswith(NODE_URI_PREFIX) for u in uris or []):
        raise IdentityError(
            f"{identity} is ztunnel's own identity; it is never used for workload mTLS")


def uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in ext.value.get_values_for_type(x509.UniformResourceIdentifier)]


def spiffe_identity(cert: x509.Certificate) -> Identity:
    """The single SPIFFE URI SAN of a certificate; anything else is an error."""
    found = [u for u in uri_sans(cert) if u.startswith(mesh.SPIFFE_SCHEME)]
    if len(found) != 1:
        raise IdentityError(f"certificate has {len(found)} SPIFFE URI SANs, expected 1")
    return Identity.parse(found[0])


def pod_uri(namespace: str, pod: str, service_account: str) -> str:
    return f"{POD_URI_PREFIX}{namespace}/{pod}/sa/{service_account}"


def pod_of(cert: x509.Certificate) -> tuple[str, str, str] | None:
    """(namespace, pod, service account) of a pod-bound bootstrap cert; None otherwise."""
    for u in uri_sans(cert):
        if u.startswith(POD_URI_PREFIX):
            parts = u[len(POD_URI_PREFIX):].split("/")
            if len(parts) == 4 and parts[2] == "sa" and all(parts):
                return parts[0], parts[1], parts[3]
    return None


def node_of(cert: x509.Certificate) -> str | None:
    """The node a bootstrap cert was issued for (URI SAN `netlab://node/<node>`)."""
    for u in uri_sans(cert):
        if u.startswith(NODE_URI_PREFIX):
            return u[len(NODE_URI_PREFIX):] or None
    return None


@dataclass(frozen=True)
class WorkloadCert:
    """A leaf certificate, its private key and the lab root, all PEM."""

    identity: Identity
    cert_pem: bytes
    key_pem: bytes
    root_pem: bytes
    not_before: datetime
    not_after: datetime
    serial: int

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, root_pem: bytes) -> "WorkloadCert":
        cert = x509.load_pem_x509_certificate(cert_pem)
        return cls(spiffe_identity(cert), cert_pem, key_pem, root_pem,
                   cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number)

    @property
    def refresh_at(self) -> float:
        """Unix time of half-life, when ztunnel asks for a new certificate."""
        start, end = self.not_before.timestamp(), self.not_after.timestamp()
        return start + (end - start) / 2

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.not_after.timestamp()


def server_context(cert: WorkloadCert) -> tlsutil.MeshContext:
    """HBONE server context for a workload; refuses the ztunnel identity."""
    require_workload(cert.identity, uri_sans(x509.load_pem_x509_certificate(cert.cert_pem)))
    return tlsutil.mesh_server_context(cert.cert_pem, cert.key_pem, cert.root_pem, str(cert.identity))


def client_context(cert: WorkloadCert) -> tlsutil.MeshContext:
    """HBONE client context for a workload; refuses the ztunnel identity."""
    require_workload(cert.identity, uri_sans(x509.load_pem_x509_certificate(cert.cert_pem)))
    return tlsutil.mesh_client_context(cert.cert_pem, cert.key_pem, cert.root_pem, str(cert.identity))


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> Identity:
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise IdentityError("peer presented no certificate")
    return spiffe_identity(x509.load_der_x509_certificate(der))


def verify_server_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket, expected: str) -> Identity:
    """Client-side check (§4): the server's URI SAN must be the destination's identity."""
    got = peer_identity(ssl_object)
    if str(got) != expected:
        raise IdentityMismatch(f"server identity mismatch: expected {expected}, got {got}")
    return got


def verify_client_trust_domain(ssl_object: ssl.SSLObject | ssl.SSLSocket, trust_domain: str) -> Identity:
    """Server-side check (§4): chain is verified by OpenSSL; the trust domain here."""
    got = peer_identity(ssl_object)
    if got.trust_domain != trust_domain:
        raise IdentityError(f"client trust domain {got.trust_domain!r} is not {trust_domain!r}")
    return got


def workload_identity(cert: x509.Certificate, trust_domain: str) -> Identity:
    """The one workload SPIFFE ID a client certificate carries, or IdentityError.

    An HBONE client speaks for exactly one workload, so its certificate must name
    exactly one: a single URI SAN, `spiffe://<trust_domain>/ns/<ns>/sa/<sa>`, and not
    ztunnel's own identity. A node bootstrap certificate (ztunnel's SPIFFE ID plus
    `netlab://node/<node>`) therefore never opens a tunnel, though the lab CA signed it.
    """
    uris = uri_sans(cert)
    if len(uris) != 1:
        raise IdentityError(f"client certificate has {len(uris)} URI SANs ({', '.join(uris) or 'none'}); "
                            "a workload certificate carries exactly one SPIFFE ID")
    got = Identity.parse(uris[0])
    if got.trust_domain != trust_domain:
        raise IdentityError(f"client trust domain {got.trust_domain!r} is not {trust_domain!r}")
    if got.is_ztunnel:
        raise IdentityError(f"{got} is ztunnel's own identity, not a workload's")
    return got


def verify_client_workload(ssl_object: ssl.SSLObject | ssl.SSLSocket, trust_domain: str) -> Identity:
    """Server-side check for HBONE: the chain is verified by OpenSSL; one workload ID here."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise IdentityError("peer presented no certificate")
    return workload_identity(x509.load_der_x509_certificate(der), trust_domain)


Fetch = Callable[[str, str], Awaitable[WorkloadCert]]

URGENT, BACKGROUND = 0, 1


@dataclass
class _Slot:
    """What the manager knows about one service account."""

    cert: WorkloadCert | None = None
    waiters: list[asyncio.Future[WorkloadCert]] = field(default_factory=list)
    in_flight: bool = False
    timer: asyncio.TimerHandle | None = None
    contexts: dict[str, tuple[int, ssl.SSLContext]] = field(default_factory=dict)


class CertManager:
    """One certificate per (namespace, service account), refreshed at half-life.

    Fetches go through a priority queue served by `concurrency` workers: a fetch a live
    request waits on (`get`) jumps ahead of eager prefetches and refreshes, as in
    ztunnel's SecretManager. Use as `async with CertManager(client.fetch) as m:`.
    """

    def __init__(self, fetch: Fetch, *, concurrency: int = 2, retry_seconds: float = 1.0) -> None:
        self._fetch = fetch
        self._concurrency = concurrency
        self._retry = retry_seconds
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._queue: list[tuple[int, int, tuple[str, str]]] = []
        self._seq = itertools.count()
        self._ready = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self.fetch_log: list[tuple[str, str]] = []  # order of fetches, for tests and debugging

    async def __aenter__(self) -> "CertManager":
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._concurrency)]

    async def close(self) -> None:
        for t in self._workers:
            t.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for slot in self._slots.values():
            if slot.timer:
                slot.timer.cancel()
            for w in slot.waiters:
                if not w.done():
                    w.cancel()

    def prefetch(self, namespace: str, service_account: str) -> None:
        """A service account appeared on the node: fetch eagerly, at low priority."""
        self._check(namespace, service_account)
        key = (namespace, service_account)
        slot = self._slots.setdefault(key, _Slot())
        if slot.cert is None:
            self._enqueue(BACKGROUND, key)

    def forget(self, namespace: str, service_account: str) -> None:
        """The service account left the node: stop refreshing; whoever waits is told why."""
        slot = self._slots.pop((namespace, service_account), None)
        if slot is None:
            return
        if slot.timer:
            slot.timer.cancel()
        for w in slot.waiters:
            if not w.done():
                w.set_exception(IdentityError(
                    f"certificate for {namespace}/{service_account} forgotten: no such workload here"))
        slot.waiters.clear()

    def current(self, namespace: str, service_account: str) -> WorkloadCert | None:
        slot = self._slots.get((namespace, service_account))
        return slot.cert if slot else None

    async def get(self, namespace: str, service_account: str) -> WorkloadCert:
        """A valid certificate now; if there is none, fetch it ahead of everything else.

        A caller that arrives while a fetch is in flight gets that fetch's outcome, its
        certificate or its error (logged here as a warning), as ztunnel's SecretManager
        answers a waiter with the next state of the identity. One that arrives after a
        failure, before the retry, starts a fetch at once (ztunnel would wait for its
        backoff, ~1 s). Either way the caller is answered: nothing waits without a fetch.
        """
        self._check(namespace, service_account)
        key = (namespace, service_account)
        slot = self._slots.setdefault(key, _Slot())
        if slot.cert is not None and not slot.cert.expired():
            return slot.cert
        fut: asyncio.Future[WorkloadCert] = asyncio.get_running_loop().create_future()
        slot.waiters.append(fut)
        self._enqueue(URGENT, key)
        return await fut

    async def server_context(self, namespace: str, service_account: str) -> ssl.SSLContext:
        return await self._context(namespace, service_account, "server")

    async def client_context(self, namespace: str, service_account: str) -> ssl.SSLContext:
        return await self._context(namespace, service_account, "client")

    async def _context(self, namespace: str, service_account: str, role: str) -> ssl.SSLContext:
        """A context for the current cert; a rotated cert gets a new context object."""
        cert = await self.get(namespace, service_account)
        slot = self._slots[(namespace, service_account)]
        cached = slot.contexts.get(role)
        if cached and cached[0] == cert.serial:
            return cached[1]
        ctx = server_context(cert) if role == "server" else client_context(cert)
        slot.contexts[role] = (cert.serial, ctx)
        return ctx

    @staticmethod
    def _check(namespace: str, service_account: str) -> None:
        if (namespace, service_account) == (ZTUNNEL_NAMESPACE, ZTUNNEL_SERVICE_ACCOUNT):
            raise IdentityError("ztunnel's own identity is never fetched as a workload identity")

    def _enqueue(self, priority: int, key: tuple[str, str]) -> None:
        heapq.heappush(self._queue, (priority, next(self._seq), key))
        self._ready.set()

    async def _next(self) -> tuple[str, str]:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return heapq.heappop(self._queue)[2]

    async def _work(self) -> None:
        while True:
            key = await self._next()
            slot = self._slots.get(key)
            if slot is None or slot.in_flight:
                continue
            fresh = slot.cert is not None and time.time() < slot.cert.refresh_at
            if fresh and not slot.waiters:
                continue
            if fresh:
                self._resolve(slot, slot.cert)
                continue
            slot.in_flight = True
            try:
                self.fetch_log.append(key)
                cert = await self._fetch(*key)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure is retried; waiters see it
                log.warning("certificate fetch for %s/%s failed: %s", *key, e)
                for w in slot.waiters:
                    if not w.done():
                        w.set_exception(e)
                slot.waiters.clear()
                self._schedule(key, slot, time.time() + self._retry)
            else:
                slot.cert = cert
                self._resolve(slot, cert)
                self._schedule(key, slot, cert.refresh_at)
            finally:
                slot.in_flight = False

    @staticmethod
    def _resolve(slot: _Slot, cert: WorkloadCert | None) -> None:
        for w in slot.waiters:
            if not w.done() and cert is not None:
                w.set_result(cert)
        slot.waiters.clear()

    def _schedule(self, key: tuple[str, str], slot: _Slot, at: float) -> None:
        if slot.timer:
            slot.timer.cancel()
        delay = max(0.0, at - time.time())
        slot.timer = asyncio.get_running_loop().call_later(
            delay, self._enqueue, BACKGROUND, key)
