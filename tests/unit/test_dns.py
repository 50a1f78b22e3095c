"""Cluster DNS: the pure answer() function, then the server on 127.0.0.1 (no root)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from netlab.dataplane.dns import Zone, answer
from tests.conftest import stop_process

RECORDS = {"ratings.bookinfo.svc.cluster.local": "10.96.0.11",
           "Reviews.Bookinfo.svc.cluster.local.": "10.96.0.12",
           "headless.db.svc.cluster.local": ["10.1.0.5", "10.1.0.6"]}
REPO = Path(__file__).resolve().parents[2]


def ask(name: str, rdtype: str = "A") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    r = dns.message.from_wire(answer(q.to_wire(), RECORDS, ttl=7))
    assert r.id == q.id and r.flags & dns.flags.QR
    assert r.question == q.question
    return r


def addresses(r: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in r.answer for rd in rrset)


@pytest.mark.parametrize("name", ["ratings.bookinfo.svc.cluster.local.",
                                  "RATINGS.Bookinfo.svc.cluster.local",
                                  "reviews.bookinfo.svc.cluster.local"])
def test_known_name_any_case_with_or_without_dot(name: str) -> None:
    r = ask(name)
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA
    assert addresses(r) in (["10.96.0.11"], ["10.96.0.12"])
    assert r.answer[0].ttl == 7
    # The owner name is the query's, letter case included (resolvers may use 0x20).
    assert r.answer[0].name.to_text() == r.question[0].name.to_text()
    assert r.answer[0].name.to_text().rstrip(".") == name.rstrip(".")


def test_headless_service_answers_every_address() -> None:
    assert addresses(ask("headless.db.svc.cluster.local")) == ["10.1.0.5", "10.1.0.6"]


def test_unknown_name_in_cluster_domain_is_nxdomain() -> None:
    r = ask("nope.bookinfo.svc.cluster.local")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert not r.answer
    assert r.authority[0].rdtype == dns.rdatatype.SOA  # negative answers are cacheable


def test_parent_of_a_known_name_exists_without_data() -> None:
    r = ask("svc.cluster.local")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


def test_aaaa_for_known_name_is_noerror_with_no_answer() -> None:
    r = ask("ratings.bookinfo.svc.cluster.local", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR
    assert not r.answer


@pytest.mark.parametrize("name", ["example.com", "kubernetes.io", "1.0.96.10.in-addr.arpa"])
def test_names_outside_cluster_domain_are_refused(name: str) -> None:
    r = ask(name)
    assert r.rcode() == dns.rcode.REFUSED
    assert not r.answer


def test_garbage_gets_formerr_or_nothing() -> None:
    assert answer(b"\x12", RECORDS) == b""
    r = answer(b"\xab\xcd" + b"\xff" * 20, RECORDS)
    assert r[:2] == b"\xab\xcd" and r[3] & 0x0F == dns.rcode.FORMERR


def test_udp_answer_too_big_is_truncated() -> None:
    many = {"big.svc.cluster.local": [f"10.2.{i // 250}.{i % 250}" for i in range(100)]}
    q = dns.message.make_query("big.svc.cluster.local", "A", use_edns=False)
    wire, info = Zone(many).respond(q.to_wire(), udp=True)
    r = dns.message.from_wire(wire)
    assert r.flags & dns.flags.TC and not r.answer and info["truncated"]
    assert len(addresses(dns.message.from_wire(Zone(many).respond(q.to_wire())[0]))) == 100


def test_ipv6_records_are_rejected_at_load() -> None:
    with pytest.raises(ValueError):
        Zone({"v6.svc.cluster.local": "fd00::1"})


# --- the server process on loopback ---------------------------------------------------

def free_port() -> int:
    """A port free for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


class Server:
    def __init__(self, cfg: Path, proc: subprocess.Popen[str], port: int) -> None:
        self.cfg, self.proc, self.port = cfg, proc, port

    def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        assert text, self.proc.stderr.read() if self.proc.stderr else ""
        return json.loads(text)

    def resolver(self) -> dns.resolver.Resolver:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = ["127.0.0.1"]
        res.port = self.port
        res.lifetime = 3
        return res


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    cfg = tmp_path / "dns.json"
    cfg.write_text(json.dumps({"listen": "127.0.0.1", "port": port, "netns": [],
                               "records": RECORDS, "ttl": 5}))
    proc = subprocess.Popen([sys.executable, "-m", "netlab.dataplane.dns", "--config",
                             str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    try:
        srv = Server(cfg, proc, port)
        assert srv.line() == {"ready": True}
        yield srv
    finally:
        stop_process(proc, timeout=5)


def test_server_resolves_over_udp_and_tcp(server: Server) -> None:
    res = server.resolver()
    a = res.resolve("ratings.bookinfo.svc.cluster.local", "A")
    assert [r.address for r in a] == ["10.96.0.11"]
    log = server.line()
    assert log["proto"] == "udp" and log["rcode"] == "NOERROR"
    assert log["qname"] == "ratings.bookinfo.svc.cluster.local." and log["netns"] is None
    a = res.resolve("reviews.bookinfo.svc.cluster.local", "A", tcp=True)
    assert [r.address for r in a] == ["10.96.0.12"]
    assert server.line()["proto"] == "tcp"
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("gone.bookinfo.svc.cluster.local", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        res.resolve("ratings.bookinfo.svc.cluster.local", "AAAA")
    q = dns.message.make_query("example.com", "A")
    assert dns.query.udp(q, "127.0.0.1", port=server.port, timeout=3).rcode() == \
        dns.rcode.REFUSED


def test_sighup_rereads_the_records(server: Server) -> None:
    res = server.resolver()
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("details.bookinfo.svc.cluster.local", "A")
    server.line()
    server.cfg.write_text(json.dumps({"listen": "127.0.0.1", "port": server.port,
                                      "records": {"details.bookinfo.svc.cluster.local":
                                                  "10.96.0.13"}}))
    server.proc.send_signal(signal.SIGHUP)
    reloaded = server.line()
    assert reloaded["reloaded"] is True and reloaded["records"] == 1
    a = res.resolve("details.bookinfo.svc.cluster.local", "A")
    assert [r.address for r in a] == ["10.96.0.13"]


def test_bad_reload_keeps_serving(server: Server) -> None:
    server.cfg.write_text("{not json")
    server.proc.send_signal(signal.SIGHUP)
    assert server.line()["reloaded"] is False
    a = server.resolver().resolve("ratings.bookinfo.svc.cluster.local", "A")
    assert [r.address for r in a] == ["10.96.0.11"]


def test_bad_config_exits_with_a_message(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"records": {}}))
    done = subprocess.run([sys.executable, "-m", "netlab.dataplane.dns", "--config", str(cfg)],
                          capture_output=True, text=True, cwd=REPO, timeout=10)
    assert done.returncode == 2 and "listen" in done.stderr
