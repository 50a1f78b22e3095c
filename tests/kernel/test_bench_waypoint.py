"""`netlab bench waypoint` end to end, at a small size: real wrk on the three paths, and the
proxies' own counters proving each path crossed what it claims. No figure is judged here
(performance lives in the bench's output, not in tests)."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.kernel


def test_bench_waypoint_small_run_crosses_what_each_path_claims() -> None:
    res = run_cli("bench", "waypoint", "--seconds", "1", "--rounds", "1", "--json", timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(res.stdout)
    assert list(r["paths"]) == ["direct", "ztunnel", "waypoint"]
    for key, p in r["paths"].items():
        assert p["requests"] > 0 and p["errors"] == 0, key
    (wp,) = r["paths"]["waypoint"]["runs"]
    # Every request wrk completed went through the waypoint, and each reached the server's
    # ztunnel as its own HBONE stream from the waypoint; none came from the client directly.
    assert wp["counted"]["waypoint_requests"] >= wp["requests"]
    assert wp["counted"]["hbone_from_waypoint"] >= 1 and wp["counted"]["hbone_from_client"] == 0
    (zt,) = r["paths"]["ztunnel"]["runs"]
    assert zt["counted"]["hbone_from_client"] >= 1 and zt["counted"]["waypoint_requests"] == 0
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"nl-{r['lab']}-")]  # torn down
    assert not os.path.isdir(f"/run/netlab/{r['lab']}")
