"""ztunnel's DNS proxy without a kernel: which names it answers, what it forwards, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from netlab.snapshot import Endpoint, Service, ServicePort
from netlab.dataplane.ztunnel.dns_proxy import DnsProxy, NameTable, _parse_upstream

EP = (Endpoint("bookinfo/ratings-0", "10.244.1.5", 9080),)
SERVICES = [
    Service("bookinfo", "ratings", "10.96.0.11",
            (ServicePort(9080, endpoints=EP), ServicePort(9443, endpoints=EP))),  # one record
    Service("outside", "echo", "10.96.0.12", (ServicePort(8080),)),
]


@pytest.fixture
def table() -> NameTable:
    return NameTable(SERVICES, "bookinfo")


@pytest.mark.parametrize("qname,fqdn", [
    ("ratings.bookinfo.svc.cluster.local.", "ratings.bookinfo.svc.cluster.local"),
    ("RATINGS.Bookinfo.svc.cluster.local", "ratings.bookinfo.svc.cluster.local"),
    ("ratings", "ratings.bookinfo.svc.cluster.local"),            # own namespace, short
    ("ratings.bookinfo", "ratings.bookinfo.svc.cluster.local"),
    ("ratings.bookinfo.svc", "ratings.bookinfo.svc.cluster.local"),
    ("echo.outside", "echo.outside.svc.cluster.local"),
    # what the stub sends first for `echo.outside` (ndots:5, own search domain first)
    ("echo.outside.bookinfo.svc.cluster.local.", "echo.outside.svc.cluster.local"),
    ("echo.outside.svc.bookinfo.svc.cluster.local", "echo.outside.svc.cluster.local"),
    # ztunnel trims *every* search domain, then expands: `ratings` again (get_aliases)
    ("ratings.svc.cluster.local", "ratings.bookinfo.svc.cluster.local"),
    ("ratings.cluster.local", "ratings.bookinfo.svc.cluster.local"),
])
def test_names_the_search_path_makes_are_answered(table: NameTable, qname: str, fqdn: str) -> None:
    assert table.lookup(qname) == fqdn


@pytest.mark.parametrize("qname", [
    "echo",                                   # another namespace needs `echo.outside`
    "echo.bookinfo.svc.cluster.local",        # no echo in bookinfo
    "ratings.outside.svc.cluster.local",
    "svc.cluster.local",
    "example.com",
    "ratings.bookinfo.svc.cluster.local.example.com",
])
def test_other_names_are_not_ours(table: NameTable, qname: str) -> None:
    assert table.lookup(qname) is None


def _q(name: str, rdtype: str = "A") -> dns.message.Message:
    return dns.message.make_query(name, rdtype)


def _records(resp: dns.message.Message) -> list[tuple[str, str, int, list[str]]]:
    return [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype), r.ttl, sorted(x.to_text() for x in r))
            for r in resp.answer]


# The expectations below are the cases of ztunnel@1.24.0 src/dns/server.rs `lookup()`
# test, on netlab's names: productpage.ns1 is ratings.bookinfo (the client's namespace),
# example.ns2 is echo.outside.
@pytest.mark.parametrize("qname,records", [
    ("ratings.bookinfo.svc.cluster.local.",       # "k8s host - fqdn"
     [("ratings.bookinfo.svc.cluster.local.", "A", 30, ["10.96.0.11"])]),
    ("ratings.bookinfo.", [("ratings.bookinfo.", "A", 30, ["10.96.0.11"])]),   # name.namespace
    ("ratings.", [("ratings.", "A", 30, ["10.96.0.11"])]),                     # shortname
    ("echo.outside.", [("echo.outside.", "A", 30, ["10.96.0.12"])]),           # non-local name.namespace
    ("echo.outside.svc.", [("echo.outside.svc.", "A", 30, ["10.96.0.12"])]),   # name.namespace.svc
    ("ratings.bookinfo.bookinfo.svc.cluster.local.",  # "with search namespace yields cname+A record"
     [("ratings.bookinfo.bookinfo.svc.cluster.local.", "CNAME", 30, ["ratings.bookinfo."]),
      ("ratings.bookinfo.", "A", 30, ["10.96.0.11"])]),
])
def test_answers_as_ztunnel_does(table: NameTable, qname: str, records: list[Any]) -> None:
    resp = table.respond(_q(qname))
    assert resp is not None and resp.rcode() == dns.rcode.NOERROR and resp.flags & dns.flags.AA
    assert _records(resp) == records


@pytest.mark.parametrize("qname", ["ratings.bookinfo.svc.cluster.local.",
                                   "ratings.bookinfo.bookinfo.svc.cluster.local."])
def test_aaaa_for_known_service_is_noerror_without_records(table: NameTable, qname: str) -> None:
    resp = table.respond(_q(qname, "AAAA"))
    assert resp is not None and resp.rcode() == dns.rcode.NOERROR
    assert resp.answer == []


def test_shortname_of_another_namespace_is_forwarded(table: NameTable) -> None:
    """ "failure: k8s host - non local namespace - shortname": forwarded, not answered."""
    assert table.respond(_q("echo.")) is None


@pytest.mark.parametrize("name,rdtype", [("ratings.bookinfo.svc.cluster.local.", "TXT"),
                                         ("ratings.bookinfo.svc.cluster.local.", "SRV"),
                                         ("nosuch.bookinfo.svc.cluster.local.", "A"),
                                         ("example.com.", "A")])
def test_unknown_names_and_other_types_go_upstream(table: NameTable, name: str, rdtype: str) -> None:
    assert table.respond(_q(name, rdtype)) is None


class FakeUpstream:
    """Records what would be forwarded; answers with a canned reply or not at all."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply, self.sent = reply, []

    async def udp(self, wire: bytes) -> bytes | None:
        self.sent.append(("udp", wire))
        return self.reply

    async def tcp(self, wire: bytes) -> bytes | None:
        self.sent.append(("tcp", wire))
        return self.reply


def _proxy(reply: bytes | None) -> tuple[DnsProxy, FakeUpstream]:
    up = FakeUpstream(reply)
    return DnsProxy("nl-test", NameTable(SERVICES, "bookinfo"), up), up  # type: ignore[arg-type]


@pytest.mark.parametrize("udp", [True, False])
def test_known_service_is_answered_without_upstream(udp: bool) -> None:
    proxy, up = _proxy(b"never")
    out = asyncio.run(proxy.handle(_q("ratings.bookinfo.svc.cluster.local.").to_wire(), udp))
    resp = dns.message.from_wire(out)
    assert resp.answer[0][0].to_text() == "10.96.0.11" and resp.flags & dns.flags.QR
    assert up.sent == []


@pytest.mark.parametrize("udp", [True, False])
def test_unknown_name_is_forwarded_unchanged(udp: bool) -> None:
    wire = _q("nosuch.bookinfo.svc.cluster.local.").to_wire()
    proxy, up = _proxy(b"upstream-bytes")
    assert asyncio.run(proxy.handle(wire, udp)) == b"upstream-bytes"
    assert up.sent == [("udp" if udp else "tcp", wire)]


def test_upstream_silence_is_servfail() -> None:
    query = _q("example.com.")
    proxy, _ = _proxy(None)
    resp = dns.message.from_wire(asyncio.run(proxy.handle(query.to_wire(), True)))
    assert resp.id == query.id and resp.rcode() == dns.rcode.SERVFAIL


def test_malformed_query_gets_formerr_or_nothing() -> None:
    proxy, up = _proxy(b"never")
    out = asyncio.run(proxy.handle(b"\x12\x34" + b"\x01\x00\x00\x01" + b"\x00" * 6 + b"\xff", True))
    assert out[:2] == b"\x12\x34" and dns.rcode.from_flags(out[2] << 8 | out[3], 0) == dns.rcode.FORMERR
    assert asyncio.run(proxy.handle(b"\x00\x01", True)) == b""  # no header: nothing to answer
    assert up.sent == []


def test_answer_failure_is_servfail_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy, _ = _proxy(None)

    def boom(_q: dns.message.Message) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(proxy.table, "respond", boom)
    resp = dns.message.from_wire(asyncio.run(proxy.handle(_q("ratings.").to_wire(), True)))
    assert resp.rcode() == dns.rcode.SERVFAIL


@pytest.mark.parametrize("text,addr", [("10.96.0.10:53", ("10.96.0.10", 53)),
                                       ("10.96.0.10", ("10.96.0.10", 53)),
                                       ("10.96.0.10:5353", ("10.96.0.10", 5353)),
                                       (None, None), ("", None)])
def test_upstream_address(text: str | None, addr: tuple[str, int] | None) -> None:
    assert _parse_upstream(text) == addr
