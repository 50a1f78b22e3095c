"""Rendered rules survive the kernel round trip: restore in a fresh netns, save, compare.

Run for both iptables backends this Debian ships (nf_tables and legacy), since a lab host
may use either and their iptables-save output is what the normaliser must fold.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Iterator

import pytest

from tests import golden

from netlab.kernel import netns
from netlab.plan import iptables_text as it
from netlab.plan import istio_rules as ir
from netlab.plan import steal_rules as sr
from netlab.plan.profile import profile

pytestmark = pytest.mark.kernel

GOLDEN = golden.ISTIO  # vendored copies, see tests/golden/istio/README.md
BACKENDS = ("iptables-nft", "iptables-legacy")


@pytest.fixture
def ns() -> Iterator[str]:
    """A fresh, uniquely named netns; removed even when the test fails."""
    name = f"nl-iptlive-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.delete(name)


def run_in(name: str, argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(["nsenter", f"--net={netns.path(name)}", *argv], input=stdin,
                          text=True, capture_output=True, timeout=30)
    assert proc.returncode == 0, f"{argv} failed in {name}: {proc.stderr}"
    return proc.stdout


def restore(name: str, backend: str, text: str, *extra: str) -> None:
    run_in(name, [f"{backend}-restore", *extra], stdin=text)


def save(name: str, backend: str) -> it.Ruleset:
    return it.parse(run_in(name, [f"{backend}-save"]))


def golden_v4(name: str) -> it.Ruleset:
    if not GOLDEN.is_dir():
        pytest.fail(f"golden files not found at {GOLDEN}: tests/golden is part of the repo")
    return it.parse_all((GOLDEN / name).read_text())[0]


LIVE_CASES = {
    "ambient-inpod-1.28/default.golden": lambda: ir.render_ambient_inpod("redirect"),
    "ambient-inpod-1.23/default.golden": lambda: ir.render_ambient_inpod("tproxy"),
    "ambient-inpod-1.28/ingress.golden":
        lambda: ir.render_ambient_inpod("redirect", bypass_inbound=True, dns_capture=False),
    "sidecar-1.28/basic.golden": lambda: ir.render_sidecar(),
    "sidecar-1.28/tproxy.golden": lambda: ir.render_sidecar(
        "TPROXY", exclude_inbound=(), exclude_outbound_ports=(),
        outbound_ranges_include="9.9.0.0/16", outbound_ranges_exclude=("1.1.0.0/16",),
        exclude_interfaces=("not-istio-nic",), dns_servers=("127.0.0.53",)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("golden", sorted(LIVE_CASES))
def test_live_rules_equal_golden(ns: str, backend: str, golden: str) -> None:
    restore(ns, backend, LIVE_CASES[golden]())
    live = save(ns, backend)
    expected = golden_v4(golden)
    assert live == expected, f"{backend} in {ns}:\n{it.diff(expected, live, ('golden', 'live'))}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_live_hostprobe_with_ipset(ns: str, backend: str) -> None:
    spec = ir.hostprobe_ipset(ns, ["10.244.1.2"])
    run_in(ns, ["ipset", "create", spec.name, spec.type])
    for member in spec.members:
        run_in(ns, ["ipset", "add", spec.name, member])
    restore(ns, backend, ir.render_ambient_hostprobe(jump_first=True))
    live = save(ns, backend)
    expected = golden_v4("ambient-inpod-1.28/hostprobe.golden")
    assert live == expected, it.diff(expected, live, ("golden", "live"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("version", ["1.23", "1.24+"])
@pytest.mark.parametrize("first", [False, True], ids=["appended", "inserted-first"])
def test_steal_on_top_of_ambient(ns: str, backend: str, version: str, first: bool) -> None:
    restore(ns, backend, ir.render_ambient_inpod(profile(version).ambient_capture))
    before = save(ns, backend)
    restore(ns, backend, sr.render_steal(8080, 40000, 4242, output_jump_first=first),
            *sr.RESTORE_ARGS)
    after = save(ns, backend)

    expected_output = (["-j MIRRORD_OUTPUT", "-j ISTIO_OUTPUT"] if first
                       else ["-j ISTIO_OUTPUT", "-j MIRRORD_OUTPUT"])
    assert after.chain("nat", "OUTPUT") == expected_output
    prerouting = ["-j ISTIO_PRERT"] if version == "1.24+" else []
    assert after.chain("nat", "PREROUTING") == prerouting + ["-j MIRRORD_INPUT"]
    assert after.chain("nat", "MIRRORD_OUTPUT") == [
        "-m owner --gid-owner 4242 -j RETURN",
        "-o lo -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 40000"]
    # --noflush left every Istio rule in place, in order.
    for table, chain, _ in before.rules:
        if not (table == "nat" and chain in ("OUTPUT", "PREROUTING")):
            assert after.chain(table, chain) == before.chain(table, chain)
    assert sr.detect_mesh(run_in(ns, [f"{backend}-save"])) == "istio-ambient"


@pytest.mark.parametrize("backend", BACKENDS)
def test_detect_mesh_live_sidecar(ns: str, backend: str) -> None:
    restore(ns, backend, ir.render_sidecar())
    assert sr.detect_mesh(run_in(ns, [f"{backend}-save"])) == "istio-sidecar"
