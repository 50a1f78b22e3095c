"""`netlab bench waypoint` without root: rounds folded into medians, the ratios, and the
refusal of a run whose proxies' counters do not fit its path (a ztunnel path that met the
waypoint, a waypoint path the waypoint did not count)."""

from __future__ import annotations

from typing import Any

import pytest

from netlab.bench import waypoint as bw
from netlab.errors import BenchError

ZERO = {"waypoint_requests": 0.0, "hbone_from_client": 0.0, "hbone_from_waypoint": 0.0}


def one(rps: float, p50: float, p99: float, requests: int, **counted: float) -> dict[str, Any]:
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "requests": requests, "errors": 0,
            "cpu_ms_per_request": 1000 / rps, "cpu_cores": 1.5, "counted": {**ZERO, **counted}}


def result() -> dict[str, Any]:
    runs = {"direct": [one(7000, 1.0, 5.0, 28000), one(6000, 1.2, 6.0, 24000), one(8000, 0.9, 4.0, 32000)],
            "ztunnel": [one(4000, 2.0, 7.0, 16000, hbone_from_client=10)] * 3,
            "waypoint": [one(700, 14.0, 27.0, 2800, waypoint_requests=2800, hbone_from_waypoint=2800)] * 3}
    return {"paths": {k: {"label": k, **bw._median(v)} for k, v in runs.items()}}


def test_medians_ratios_and_the_waypoint_against_ztunnel() -> None:
    r = result()
    bw._check(r)
    bw._ratios(r)
    d, z, w = (r["paths"][k] for k in ("direct", "ztunnel", "waypoint"))
    assert d["rps"] == 7000 and d["p50_ms"] == 1.0 and d["rps_spread"] == [6000, 8000]
    assert d["requests"] == 84000
    assert z["rps_vs_direct"] == pytest.approx(4000 / 7000) and z["added_p50_ms"] == pytest.approx(1.0)
    assert r["waypoint_vs_ztunnel"]["rps"] == pytest.approx(700 / 4000)
    assert r["waypoint_vs_ztunnel"]["p50_ms"] == pytest.approx(12.0)
    assert w["added_p99_ms"] == pytest.approx(22.0)


@pytest.mark.parametrize("path, counted", [
    ("ztunnel", {"hbone_from_client": 10, "waypoint_requests": 3}),      # met the waypoint
    ("ztunnel", {}),                                                     # no HBONE at all
    ("waypoint", {"waypoint_requests": 2000, "hbone_from_waypoint": 2000}),  # fewer than wrk completed
    ("waypoint", {"waypoint_requests": 2800, "hbone_from_client": 1}),   # went around the waypoint too
    ("direct", {"hbone_from_client": 1}),                                # captured by ztunnel
])
def test_a_run_whose_counters_do_not_fit_its_path_is_refused(path: str, counted: dict[str, float]) -> None:
    r = result()
    r["paths"][path]["runs"][0] = {**r["paths"][path]["runs"][0], "counted": {**ZERO, **counted}}
    with pytest.raises(BenchError, match=path):
        bw._check(r)


def test_errors_are_refused() -> None:
    r = result()
    r["paths"]["waypoint"]["errors"] = 3
    with pytest.raises(BenchError, match="waypoint: 3 requests failed"):
        bw._check(r)
