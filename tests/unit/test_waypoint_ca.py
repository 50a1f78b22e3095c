"""The pod-bound bootstrap a waypoint stands on: its own identity, and nothing else."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography import x509

from netlab.dataplane import identity as ident
from netlab.dataplane.ca import IMPERSONATION_FAILURE, CAError, CAServer, CertClient, LabCA


def test_pod_bootstrap_names_no_spiffe_identity(tmp_path: Path) -> None:
    ca = LabCA(tmp_path / "ca")
    cert_pem, key_pem = ca.issue_pod_bootstrap("bookinfo", "waypoint-0", "waypoint")
    boot = x509.load_pem_x509_certificate(cert_pem)
    assert ident.uri_sans(boot) == ["netlab://pod/bookinfo/waypoint-0/sa/waypoint"]
    assert ident.pod_of(boot) == ("bookinfo", "waypoint-0", "waypoint")
    with pytest.raises(ident.IdentityError):  # never usable for mTLS: it is a token, not an identity
        ident.WorkloadCert.from_pem(cert_pem, key_pem, ca.root_pem)


def test_pod_gets_its_own_identity_and_no_other(tmp_path: Path) -> None:
    """istiod grants a pod the identity its token names; asking for another is impersonation,
    even one that runs on the same node (a pods-by-node entry does not help a pod token)."""
    async def main() -> None:
        ca = LabCA(tmp_path / "ca")
        pods = tmp_path / "pods.json"
        pods.write_text(json.dumps({"node-1": [["bookinfo", "ratings"]]}))
        srv = CAServer(ca, pods)
        host, port = await srv.start("127.0.0.1", 0)
        cert, key = ca.issue_pod_bootstrap("bookinfo", "waypoint-0", "waypoint")
        client = CertClient(f"https://{host}:{port}", cert, key, ca.root_pem)
        try:
            got = await client.fetch("bookinfo", "waypoint")
            assert str(got.identity) == "spiffe://cluster.local/ns/bookinfo/sa/waypoint"
            for ns, sa in (("bookinfo", "ratings"), ("other", "waypoint"), ("istio-system", "ztunnel")):
                with pytest.raises((CAError, ident.IdentityError)) as e:
                    await client.fetch(ns, sa)
                if isinstance(e.value, CAError):
                    assert (e.value.status, e.value.text) == (403, IMPERSONATION_FAILURE)
        finally:
            await srv.close()
    asyncio.run(asyncio.wait_for(main(), 30))
