"""`netlab ztunnel-config` without root: ztunnel's dump from its snapshot and held
certificates, and the istioctl-shaped rows made from it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from netlab import topology
from netlab.dataplane.ztunnel.config_dump import config_dump
from netlab.observe import ztunnel_config as zc
from netlab.plan.options import PlanOptions
from netlab.plan.planner import plan
from netlab.snapshot import ProxySnapshot

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def _root_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0xABC).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=3650)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class _Cert:
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    root_pem: bytes

    def expired(self, now: float | None = None) -> bool:
        return (now or 0) >= self.not_after.timestamp()


class _Certs:
    """The one CertManager call the dump makes: the certificate held now, or None."""

    def __init__(self, held: dict[tuple[str, str], _Cert]) -> None:
        self.held = held

    def current(self, namespace: str, service_account: str) -> _Cert | None:
        return self.held.get((namespace, service_account))


def _snapshot(node: str) -> ProxySnapshot:
    state = plan(topology.load([ROOT / "topologies/ambient-bookinfo.yaml"]), PlanOptions(python="python3"))
    proc = next(p for p in state.processes if p.name == f"ztunnel/{node}")
    from netlab.snapshot import from_json

    return from_json(ProxySnapshot, proc.config)


def test_dump_and_rows_have_istioctls_columns_and_the_held_certificates() -> None:
    snap = _snapshot("node-1")
    leaf = _Cert(0x1234, NOW - dt.timedelta(hours=1), NOW + dt.timedelta(hours=23), _root_pem())
    dump = config_dump(snap, _Certs({("bookinfo", "bookinfo-ratings"): leaf}), now=NOW.timestamp())  # type: ignore[arg-type]
    work = {r["name"]: r for r in zc.rows("workloads", dump) if r["namespace"] == "bookinfo"}
    assert work["ratings-1"]["protocol"] == "HBONE" and work["ratings-1"]["waypoint"] == "None"
    assert work["sleep-0"]["identity"] == "spiffe://cluster.local/ns/bookinfo/sa/sleep"
    outside = [r for r in zc.rows("workloads", dump) if r["namespace"] == "outside"]
    assert outside and all(r["protocol"] == "TCP" and r["mesh"] == "none" for r in outside)
    assert [r["name"] for r in zc.rows("services", dump)] == ["ratings"]
    certs = {(r["identity"].rsplit("/", 1)[1], r["type"]): r for r in zc.rows("certificates", dump, now=NOW)}
    assert certs[("bookinfo-ratings", "CA")]["serial"] == "1234"  # hex, as istioctl prints it
    assert certs[("bookinfo-ratings", "CA")]["valid"] == "true"
    assert certs[("bookinfo-ratings", "Cert Chain")]["serial"] == "abc"
    # sleep's identity is served on node-1 too, but its certificate has not arrived yet.
    assert certs[("sleep", "NA")]["state"] == "Initializing" and certs[("sleep", "NA")]["valid"] == "false"


def test_an_expired_certificate_is_not_valid() -> None:
    rows = zc.certificate_rows([{"identity": "spiffe://x/ns/a/sa/b", "state": "Unavailable: certificate expired",
                                 "certChain": [{"serialNumber": "255", "validFrom": "2020-01-01T00:00:00Z",
                                                "expirationTime": "2020-01-02T00:00:00Z"}]}], NOW)
    assert rows == [{"identity": "spiffe://x/ns/a/sa/b", "type": "CA", "state": "Unavailable", "valid": "false",
                     "serial": "ff", "notAfter": "2020-01-02T00:00:00Z", "notBefore": "2020-01-01T00:00:00Z"}]


def test_policies_are_shown_with_action_and_scope() -> None:
    state = plan(topology.load([ROOT / "topologies/waypoint.yaml"]), PlanOptions(python="python3"))
    from netlab.snapshot import from_json

    proc = next(p for p in state.processes if p.name.startswith("ztunnel/"))
    dump = config_dump(from_json(ProxySnapshot, proc.config), _Certs({}))  # type: ignore[arg-type]
    rows = {r["name"]: r for r in zc.rows("policies", dump)}
    assert rows["no-plaintext-tcp"]["action"] == "Deny" and rows["no-plaintext-tcp"]["scope"] == "WorkloadSelector"
    assert rows["get-only"]["scope"] == "TargetRefs"
