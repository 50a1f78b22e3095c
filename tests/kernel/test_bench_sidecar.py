"""`netlab bench sidecar` end to end, at a small size: real wrk and the paced client on the
three paths, and the proxies' own counters proving the meshed paths crossed them. No figure
is judged here (performance lives in the bench's output, not in tests)."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.kernel


def test_bench_sidecar_small_run_crosses_every_proxy() -> None:
    res = run_cli("bench", "sidecar", "--seconds", "1", "--rate", "100", "--rate-seconds", "1",
                  "--rounds", "1", "--json", timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(res.stdout)
    assert list(r["paths"]) == ["direct", "sidecar", "ambient"]
    for key, p in r["paths"].items():
        assert p["max"]["requests"] > 0 and p["max"]["errors"] == 0, key
        assert p["fixed"]["requests"] == 100 and p["fixed"]["errors"] == 0, key
    side = r["paths"]["sidecar"]
    # The server sidecar counted every request of the sidecar path as mTLS (plus warm-ups).
    assert r["through_proxies"]["sidecar"] >= side["max"]["requests"] + side["fixed"]["requests"]
    assert r["through_proxies"]["ambient"] >= 1
    assert r["paths"]["direct"]["added_p50_per_pair_ms"] is None
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"nl-{r['lab']}-")]  # torn down
    assert not os.path.isdir(f"/run/netlab/{r['lab']}")
