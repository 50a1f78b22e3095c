"""ambient-tour through the CLI: every step of the Istio "Ambient data plane" page, once.

The lab's own verdicts must all hold, and the evidence behind them is read again here
against the page and the real clients: curl's exit codes and bodies, SYNs on the node
links, the CA's answer, the split counted from the servers that answered.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.kernel

LAB = "ambient-tour"
OUTCOMES = {"out-of-mesh": ("plaintext", False), "l4-hbone": ("works", True), "l4-same-node": ("works", True),
            "l4-deny": ("refused", True), "l7-policy": ("refused", True), "waypoint-legs": ("works", True),
            "httproute-v1": ("works", True), "split-90-10": ("works", True),
            "out-of-mesh-bypass": ("bypassed", False), "identity": ("refused", True)}


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    res = run_cli("lab", "run", LAB, "--json", timeout=300)
    data = json.loads(res.stdout)
    failed = [(r["variant"], r["error"], [v for v in r["verdicts"] if not v["held"]])
              for r in data["results"] if not r["ok"]]
    assert res.returncode == 0 and data["ok"], json.dumps(failed, indent=1)
    return {r["variant"]: r for r in data["results"]}


def test_every_step_shows_its_outcome_and_leaves_nothing(results: dict[str, dict[str, Any]]) -> None:
    assert set(results) == set(OUTCOMES)
    for name, (word, good) in OUTCOMES.items():
        r = results[name]
        assert r["expected"]["word"] == r["observed"]["word"] == word, name
        assert r["observed"]["good"] is good and r["observed"]["as_expected"], name
    instances = {r["instance"] for r in results.values()}
    assert len(instances) == 3  # one shared run, and the two steps that change the model
    for inst in instances:
        assert not os.path.isdir(f"/run/netlab/{inst}")
        assert not any(n.startswith(f"nl-{inst}-") for n in os.listdir("/run/netns"))


def test_l4_one_tcp_connection_per_pair_carries_every_request(results: dict[str, dict[str, Any]]) -> None:
    ev = results["l4-hbone"]["evidence"]["l4"]
    for c, ip in ev["client_ips"].items():
        assert ev["clients"][c]["exit_code"] == 0 and ev["clients"][c]["codes"] == ["200"] * ev["n"]
        mine = [s for s in ev["wire"]["segments"] if s["saddr"] == ip and s["daddr"] == ev["s1"]]
        assert {s["dport"] for s in mine} == {15008}
        assert sum(s["flags"] == "S" for s in mine) == 1 < ev["n"]
    assert not ev["wire"]["marker_in_clear"]


def test_out_of_mesh_is_readable_and_the_bypass_post_is_not_refused(results: dict[str, dict[str, Any]]) -> None:
    ev = results["out-of-mesh"]["evidence"]
    assert ev["out_of_mesh"]["wire"]["marker_in_clear"]
    assert ev["metrics"]["out_of_mesh"] == []
    assert ev["bypass"]["post"]["codes"] == ["200"] and ev["bypass"]["waypoint_log"] == []
    assert ev["l7"]["post"]["codes"] == ["403"] and ev["l7"]["post"]["bodies"] == ["RBAC: access denied"]


def test_l4_deny_resets_with_curl_56(results: dict[str, dict[str, Any]]) -> None:
    ev = results["l4-deny"]["evidence"]["deny"]
    assert ev["c2"]["exit_code"] == 56 and "reset by peer" in ev["c2"]["stderr"]
    assert ev["c1"]["exit_code"] == 0


def test_routes_and_split_counted_from_who_answered(results: dict[str, dict[str, Any]]) -> None:
    route = results["httproute-v1"]["evidence"]["route"]["client"]
    assert Counter(route["servers"]) == Counter({"echo-v1-0": 20})
    split = results["split-90-10"]["evidence"]["split"]["client"]
    got = Counter(split["servers"])
    assert sum(got.values()) == 200 and 1 <= got["echo-v2-0"] <= 39


def test_the_ca_refuses_w1_the_identity_of_s1(results: dict[str, dict[str, Any]]) -> None:
    ev = results["identity"]["evidence"]["identity"]
    assert ev["asks_s1"]["status"] == 403 and "impersonation" in ev["asks_s1"]["answer"]
    assert ev["asks_c1"]["status"] == 200
    assert not any("/sa/ztunnel" in i for i in ev["ztunnel_src_identities"])
