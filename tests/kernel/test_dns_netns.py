"""One DNS process serving two node netns on the same address, as a lab runs it.

Checks that the sockets bound while inside each netns answer there: with dig, and
with glibc's resolver (Python's getaddrinfo) reading a per-netns resolv.conf that
`ip netns exec` bind-mounts from /etc/netns/NAME/resolv.conf.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from netlab.kernel import netns
from tests.conftest import stop_process

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for netns")]

DNS_IP = "10.96.0.10"
RECORDS = {"ratings.bookinfo.svc.cluster.local": "10.96.0.11",
           "reviews.bookinfo.svc.cluster.local": "10.96.0.12"}
REPO = Path(__file__).resolve().parents[2]


def lo_up_with(name: str, address: str) -> None:
    from pyroute2 import IPRoute

    with netns.entered(name):
        ipr = IPRoute()  # the netlink socket belongs to this netns from here on
    try:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        ipr.addr("add", index=lo, address=address, prefixlen=32)
    finally:
        ipr.close()


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


class Lab:
    def __init__(self, names: list[str], proc: subprocess.Popen[str]) -> None:
        self.names, self.proc = names, proc

    def __getitem__(self, i: int) -> str:
        return self.names[i]

    def logged_from(self, name: str) -> dict[str, object]:
        """The server's next query log line, which names the netns it came in by."""
        line = read_line(self.proc, 5)
        assert line, "no query log line"
        entry = json.loads(line)
        assert entry["netns"] == name
        return entry


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    tag = uuid.uuid4().hex[:6]
    names = [f"nl-{tag}-node-1", f"nl-{tag}-node-2"]
    made: list[str] = []
    etc_dirs: list[Path] = []
    proc: subprocess.Popen[str] | None = None
    try:
        for name in names:
            netns.create(name)
            made.append(name)
            lo_up_with(name, DNS_IP)
            d = Path("/etc/netns") / name
            d.mkdir(parents=True)
            etc_dirs.append(d)
            (d / "resolv.conf").write_text(
                f"nameserver {DNS_IP}\n"
                "search bookinfo.svc.cluster.local svc.cluster.local cluster.local\n"
                "options ndots:5 timeout:1 attempts:1\n")
        cfg = tmp_path / "dns.json"
        cfg.write_text(json.dumps({"listen": DNS_IP, "netns": names, "records": RECORDS,
                                   "ttl": 5}))
        proc = subprocess.Popen([sys.executable, "-m", "netlab.dataplane.dns", "--config",
                                 str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO)
        line = read_line(proc, 10)
        assert line and json.loads(line) == {"ready": True}, \
            proc.stderr.read() if proc.stderr and proc.poll() is not None else line
        yield Lab(names, proc)
    finally:
        if proc is not None:
            stop_process(proc, timeout=5)
        for d in etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
        for name in made:
            netns.delete(name)


def in_netns(name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", name, *cmd], capture_output=True,
                          text=True, timeout=20)


@pytest.mark.parametrize("node", [0, 1])
def test_dig_in_each_node_netns(lab: Lab, node: int) -> None:
    name = lab[node]
    got = in_netns(name, "dig", "+short", "+time=2", "+tries=1", f"@{DNS_IP}",
                   "ratings.bookinfo.svc.cluster.local", "A")
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["10.96.0.11"]
    assert lab.logged_from(name)["proto"] == "udp"
    tcp = in_netns(name, "dig", "+tcp", "+short", "+time=2", "+tries=1", f"@{DNS_IP}",
                   "reviews.bookinfo.svc.cluster.local")
    assert tcp.stdout.split() == ["10.96.0.12"]
    refused = in_netns(name, "dig", "+time=2", "+tries=1", f"@{DNS_IP}", "example.com")
    assert "status: REFUSED" in refused.stdout


@pytest.mark.parametrize("node", [0, 1])
def test_getaddrinfo_with_search_list_in_each_node_netns(lab: Lab, node: int) -> None:
    code = ("import socket, json; print(json.dumps(sorted({ai[4][0] for ai in "
            "socket.getaddrinfo('ratings', 9080, proto=socket.IPPROTO_TCP)})))")
    got = in_netns(lab[node], sys.executable, "-c", code)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == ["10.96.0.11"]
    missing = in_netns(lab[node], sys.executable, "-c",
                       "import socket; socket.getaddrinfo('nope.bookinfo', 80)")
    assert missing.returncode != 0 and "gaierror" in missing.stderr
