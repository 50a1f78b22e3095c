"""Every variant of mirrord-ambient-steal through the CLI: verdicts and the evidence behind them."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import run_cli

LAB = "mirrord-ambient-steal"
MARKER = "stolen-by-netlab-agent"
# What each variant must show, in the lab's words (and whether that is good for the user).
OUTCOMES = {"baseline": ("works", True), "mirrord-3.112-1.23": ("reproduced", False),
            "mirrord-3.112-1.24": ("reproduced", False), "fix-3.113": ("fixed", True),
            "fix-unprivileged": ("broken", False), "workaround-unlabel": ("works", True),
            "workaround-mirror": ("works", True)}


def _run(variant: str) -> dict:
    res = run_cli("lab", "run", LAB, "--variant", variant, "--json", timeout=120)
    data = json.loads(res.stdout)
    (r,) = data["results"]
    assert res.returncode == (0 if r["ok"] else 1)
    assert r["ok"], json.dumps([v for v in r["verdicts"] if not v["held"]], indent=1) + str(r["error"])
    word, good = OUTCOMES[variant]
    assert r["expected"]["word"] == r["observed"]["word"] == word
    assert r["observed"]["good"] is good and r["observed"]["as_expected"]
    # Every variant tears down its own instance.
    assert not os.path.isdir(f"/run/netlab/{r['instance']}")
    assert not any(n.startswith(f"nl-{r['instance']}-") for n in os.listdir("/run/netns"))
    assert r["instance"].startswith("mas")  # named after the lab
    return r


def _ct_to_agent(ev: dict) -> list[dict]:
    return [c for c in ev["conntrack"] if c["netns"] == ev["pods"]["target"]["netns"]
            and c["extra"]["reply"]["sport"] == ev["ports"]["agent"]]


@pytest.mark.kernel
def test_baseline_steals() -> None:
    ev = _run("baseline")["evidence"]
    assert ev["client"]["exit_code"] == 0 and MARKER in ev["client"]["stdout"]
    assert _ct_to_agent(ev)


@pytest.mark.kernel
@pytest.mark.parametrize("variant", ["mirrord-3.112-1.23", "mirrord-3.112-1.24"])
def test_3112_broken_app_answers(variant: str) -> None:
    ev = _run(variant)["evidence"]
    assert ev["client"]["exit_code"] == 0 and MARKER not in ev["client"]["stdout"]
    assert '"server": "target-0"' in ev["client"]["stdout"]
    pos = ev["iptables"]["output_positions"]
    assert pos["ISTIO_OUTPUT"] < pos["MIRRORD_OUTPUT"]
    assert not _ct_to_agent(ev)
    assert ev["wire"]["hbone_to_target"] > 0 and not ev["wire"]["marker_seen"]


@pytest.mark.kernel
def test_fix_3113_steals_with_route_localnet() -> None:
    ev = _run("fix-3.113")["evidence"]
    assert MARKER in ev["client"]["stdout"]
    assert ev["iptables"]["output_positions"]["MIRRORD_OUTPUT"] == 1
    assert ev["sysctl"]["net.ipv4.conf.all.route_localnet"] == "1"
    assert ev["sysctl_after_agent"]["net.ipv4.conf.all.route_localnet"] == "0"
    assert any(c["extra"]["reply"]["saddr"] == "127.0.0.1" for c in _ct_to_agent(ev))
    # The agent holds the listener its SYN-ACK came from (the report's lanes rest on this).
    assert {"port": ev["ports"]["agent"], "process": "steal-agent"}.items() <= next(
        x for x in ev["listeners"] if x["port"] == ev["ports"]["agent"]).items()


@pytest.mark.kernel
def test_fix_unprivileged_syn_dies() -> None:
    ev = _run("fix-unprivileged")["evidence"]
    assert ev["client"]["exit_code"] == 28 and MARKER not in ev["client"]["stdout"]
    assert any(c["extra"]["reply"]["saddr"] == "127.0.0.1" for c in _ct_to_agent(ev))
    tns, port = ev["pods"]["target"]["netns"], ev["ports"]["agent"]
    syns = [e for e in ev["events"] if e["source"] == "bpf" and e["netns"] == tns
            and e["kind"] == "rx" and e.get("dport") == port and e.get("tcp_flags") == "S"]
    assert syns
    # The kernel's record of the drop: a kfree_skb for the SYN, or the listener's counters.
    drops = [d for d in ev["drops"] if d.get("dport") == port]
    assert drops or (ev["counters"]["TcpExtListenDrops"] > 0 and ev["counters"]["IpOutNoRoutes"] > 0)
    assert ev["sysctl"]["net.ipv4.conf.all.route_localnet"] == "0"
    assert any("route_localnet" in w for w in ev["agent"]["warnings"])


@pytest.mark.kernel
def test_workaround_unlabel_is_plaintext() -> None:
    ev = _run("workaround-unlabel")["evidence"]
    assert MARKER in ev["client"]["stdout"]
    assert ev["wire"]["hbone_to_target"] == 0 and ev["wire"]["marker_seen"]


@pytest.mark.kernel
def test_workaround_mirror_copies() -> None:
    ev = _run("workaround-mirror")["evidence"]
    assert '"server": "target-0"' in ev["client"]["stdout"]
    assert ev["iptables"]["mirrord_rules"] == 0
    assert any(ev["wire"]["marker"] in m["request"] for m in ev["agent"]["mirrored"])


@pytest.mark.kernel
def test_unknown_variant_builds_nothing() -> None:
    res = run_cli("lab", "run", LAB, "--variant", "nope")
    assert res.returncode != 0 and "no variant" in res.stderr
