"""The lab CA, its node-authorised signing service, and the per-node certificate manager."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Awaitable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from netlab.dataplane import identity as ident
from netlab.dataplane.ca import IMPERSONATION_FAILURE, CAError, CAServer, CertClient, LabCA

TD = "cluster.local"


def run(coro: Awaitable[object], timeout: float = 30) -> object:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def pods_file(tmp: Path) -> Path:
    p = tmp / "pods.json"
    p.write_text(json.dumps({"node-1": [["default", "web"]], "node-2": [["billing", "api"]]}))
    return p


async def with_ca(tmp: Path, node: str = "node-1", ttl: int | None = None) -> tuple[CAServer, CertClient, LabCA]:
    ca = LabCA(tmp / "ca")
    srv = CAServer(ca, pods_file(tmp))
    host, port = await srv.start("127.0.0.1", 0)
    cert, key = ca.issue_bootstrap(node)
    return srv, CertClient(f"https://{host}:{port}", cert, key, ca.root_pem, ttl_seconds=ttl), ca


def test_identity_parse_and_format() -> None:
    i = ident.Identity.parse("spiffe://cluster.local/ns/default/sa/web")
    assert (i.trust_domain, i.namespace, i.service_account) == ("cluster.local", "default", "web")
    assert str(i) == "spiffe://cluster.local/ns/default/sa/web"
    for bad in ("http://x/ns/a/sa/b", "spiffe://td/ns/a", "spiffe://td/ns//sa/b", "spiffe://td/sa/a/ns/b"):
        with pytest.raises(ident.IdentityError):
            ident.Identity.parse(bad)


def test_root_is_persisted_and_shared(tmp_path: Path) -> None:
    a = LabCA(tmp_path / "ca")
    b = LabCA(tmp_path / "ca")
    assert a.root_pem == b.root_pem
    assert (tmp_path / "ca" / "root-key.pem").stat().st_mode & 0o077 == 0
    root = x509.load_pem_x509_certificate(a.root_pem)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"


def test_ca_service_issues_workload_cert(tmp_path: Path) -> None:
    async def main() -> None:
        srv, client, ca = await with_ca(tmp_path, ttl=600)
        try:
            wc = await client.fetch("default", "web")
        finally:
            await srv.close()
        cert = x509.load_pem_x509_certificate(wc.cert_pem)
        assert ident.uri_sans(cert) == [f"spiffe://{TD}/ns/default/sa/web"]
        assert wc.identity == ident.Identity(TD, "default", "web")
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == 600
        assert wc.refresh_at == cert.not_valid_before_utc.timestamp() + 300
        root = x509.load_pem_x509_certificate(ca.root_pem)
        cert.verify_directly_issued_by(root)
    run(main())


def test_default_ttl_is_24h(tmp_path: Path) -> None:
    wc = LabCA(tmp_path / "ca").issue_workload("default", "web")
    assert (wc.not_after - wc.not_before).total_seconds() == 24 * 3600


def test_foreign_node_identity_is_refused_with_exact_text(tmp_path: Path) -> None:
    async def main() -> None:
        srv, client, _ = await with_ca(tmp_path, node="node-1")
        try:
            with pytest.raises(CAError) as e:
                await client.fetch("billing", "api")  # runs on node-2 only
        finally:
            await srv.close()
        assert e.value.status == 403
        assert e.value.text == "request impersonation authentication failure" == IMPERSONATION_FAILURE
    run(main())


def test_pods_file_is_reread(tmp_path: Path) -> None:
    async def main() -> None:
        srv, client, _ = await with_ca(tmp_path, node="node-1")
        try:
            with pytest.raises(CAError):
                await client.fetch("default", "late")
            (tmp_path / "pods.json").write_text(json.dumps({"node-1": [["default", "late"]]}))
            assert str((await client.fetch("default", "late")).identity).endswith("/sa/late")
        finally:
            await srv.close()
    run(main())


def test_workload_cert_cannot_impersonate(tmp_path: Path) -> None:
    """Only ztunnel's bootstrap identity may ask for other identities."""
    async def main() -> None:
        ca = LabCA(tmp_path / "ca")
        srv = CAServer(ca, pods_file(tmp_path))
        host, port = await srv.start("127.0.0.1", 0)
        web = ca.issue_workload("default", "web")
        client = CertClient(f"https://{host}:{port}", web.cert_pem, web.key_pem, ca.root_pem)
        try:
            with pytest.raises(CAError) as e:
                await client.fetch("default", "web")
        finally:
            await srv.close()
        assert (e.value.status, e.value.text) == (403, IMPERSONATION_FAILURE)
    run(main())


def test_ztunnel_identity_is_never_a_workload_identity(tmp_path: Path) -> None:
    ca = LabCA(tmp_path / "ca")
    cert_pem, key_pem = ca.issue_bootstrap("node-1")
    boot = x509.load_pem_x509_certificate(cert_pem)
    assert ident.uri_sans(boot) == [f"spiffe://{TD}/ns/istio-system/sa/ztunnel", "netlab://node/node-1"]
    assert ident.node_of(boot) == "node-1"
    as_workload = ident.WorkloadCert.from_pem(cert_pem, key_pem, ca.root_pem)
    with pytest.raises(ident.IdentityError, match="never used for workload mTLS"):
        ident.client_context(as_workload)
    with pytest.raises(ident.IdentityError):
        ident.server_context(as_workload)
    # the CA refuses to sign it, even if the pods file were to list it
    with pytest.raises(PermissionError, match=IMPERSONATION_FAILURE):
        ca.authorize(boot, ca.identity("istio-system", "ztunnel"),
                     {"node-1": [["istio-system", "ztunnel"]]})

    async def main() -> None:
        srv, client, _ = await with_ca(tmp_path)
        try:
            with pytest.raises(ident.IdentityError):
                await client.fetch("istio-system", "ztunnel")
        finally:
            await srv.close()
        mgr = ident.CertManager(client.fetch)
        with pytest.raises(ident.IdentityError):
            await mgr.get("istio-system", "ztunnel")
    run(main())


def test_manager_serves_live_requests_before_prefetches(tmp_path: Path) -> None:
    """Concurrency 1: eager fetches queue behind the one in flight; a live request jumps the queue."""
    async def main() -> None:
        ca_certs: dict[tuple[str, str], ident.WorkloadCert] = {}
        gate = asyncio.Event()

        async def fetch(ns: str, sa: str) -> ident.WorkloadCert:
            await gate.wait()
            return ca_certs[(ns, sa)]

        ca = LabCA(tmp_path / "ca")
        for sa in ("a", "b", "c", "d", "urgent"):
            ca_certs[("default", sa)] = ca.issue_workload("default", sa, ttl_seconds=3600)
        async with ident.CertManager(fetch, concurrency=1) as mgr:
            for sa in ("a", "b", "c", "d"):
                mgr.prefetch("default", sa)
            await asyncio.sleep(0.05)  # "a" is now in flight
            live = asyncio.create_task(mgr.get("default", "urgent"))
            await asyncio.sleep(0.05)
            gate.set()
            got = await live
            assert got.identity.service_account == "urgent"
            while len(mgr.fetch_log) < 5:
                await asyncio.sleep(0.01)
            assert [sa for _, sa in mgr.fetch_log] == ["a", "urgent", "b", "c", "d"]
            # a second get is served from the cache, no new fetch
            await mgr.get("default", "urgent")
            assert len(mgr.fetch_log) == 5

    run(main())


def test_manager_gives_a_new_context_after_rotation(tmp_path: Path) -> None:
    async def main() -> None:
        srv, client, _ = await with_ca(tmp_path, ttl=2)
        try:
            async with ident.CertManager(client.fetch) as mgr:
                c1 = await mgr.client_context("default", "web")
                assert c1 is await mgr.client_context("default", "web")  # cached while the cert lasts
                first = mgr.current("default", "web")
                assert first is not None
                while mgr.current("default", "web") is first:
                    await asyncio.sleep(0.05)
                c2 = await mgr.client_context("default", "web")
                assert c2 is not c1
        finally:
            await srv.close()
    run(main())


def test_ca_cli_serves(tmp_path: Path) -> None:
    """`python -m netlab.dataplane.ca` starts, says where it listens, and signs."""
    ca = LabCA(tmp_path / "ca")
    cmd = [sys.executable, "-m", "netlab.dataplane.ca", "--dir", str(tmp_path / "ca"),
           "--listen", "127.0.0.1:0", "--pods-by-node", str(pods_file(tmp_path))]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("netlab CA listening on 127.0.0.1:"), line
            port = int(line.rsplit(":", 1)[1])
            cert, key = ca.issue_bootstrap("node-1")
            client = CertClient(f"https://127.0.0.1:{port}", cert, key, ca.root_pem)
            wc = run(client.fetch("default", "web"))
            assert isinstance(wc, ident.WorkloadCert) and wc.identity.service_account == "web"
        finally:
            proc.terminate()
            proc.wait(10)
