"""`netlab bench sidecar` without root: wrk's report parsed, the rounds folded into medians,
the per-pair figures, and the refusal of a path that did not cross its proxies."""

from __future__ import annotations

import pytest

from netlab.bench import sidecar as bs
from netlab.bench.wrk import parse_wrk
from netlab.errors import BenchError

# Debian wrk 4.1.0's report, as it printed it in a sidecar pod of this lab.
WRK = """\
Running 3s test @ http://server.side:8080/
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.48ms    4.00ms  35.16ms   81.93%
    Req/Sec     1.39k   483.91     2.32k    73.33%
  Latency Distribution
     50%    6.30ms
     75%    9.04ms
     90%   12.05ms
     99%   24.72ms
  4174 requests in 3.01s, 2.52MB read
Requests/sec:   1385.51
Transfer/sec:    855.20KB
"""


def test_wrk_report_parsed() -> None:
    r = parse_wrk(WRK)
    assert r == {"rps": 1385.51, "requests": 4174, "p50_ms": 6.30, "p75_ms": 9.04, "p90_ms": 12.05,
                 "p99_ms": 24.72, "errors": 0}


def test_wrk_units_and_errors() -> None:
    text = (WRK.replace("     50%    6.30ms", "     50%  830.00us").replace("     99%   24.72ms", "     99%    1.20s")
            .replace("Requests/sec", "  Non-2xx or 3xx responses: 7\n  Socket errors: connect 0, read 2, "
                                     "write 0, timeout 1\nRequests/sec"))
    r = parse_wrk(text)
    assert r["p50_ms"] == pytest.approx(0.83) and r["p99_ms"] == pytest.approx(1200.0)
    assert r["errors"] == 10
    with pytest.raises(BenchError, match="wrk printed no result"):
        parse_wrk("unable to connect to 10.96.0.11:8080 Connection refused\n")


def _round(p50: float, rate: float = 500.0) -> dict[str, float]:
    return {"requests": 2000, "errors": 0, "seconds": 4.0, "rate": rate, "p50_ms": p50,
            "p90_ms": p50 * 2, "p99_ms": p50 * 5, "max_ms": p50 * 10, "late_p99_ms": 0.1}


def _result(direct: float, side: float, amb: float, counted: float = 10_000) -> dict:
    paths = {}
    for key, p50 in (("direct", direct), ("sidecar", side), ("ambient", amb)):
        paths[key] = {"proxy_pairs": bs.PROXY_PAIRS[key],
                      "max": {"rps": 1000.0 / p50, "requests": 3000, "errors": 0},
                      "fixed": bs._median_of([_round(p50 * 3), _round(p50), _round(p50 * 1.1)])}
    return {"paths": paths, "through_proxies": {"sidecar": counted, "ambient": 12}}


def test_rounds_fold_into_medians_and_per_pair_figures() -> None:
    r = _result(0.25, 1.0, 0.5)
    fixed = r["paths"]["sidecar"]["fixed"]
    assert fixed["p50_ms"] == pytest.approx(1.1) and fixed["p50_spread_ms"] == [1.0, 3.0]
    assert fixed["requests"] == 6000 and len(fixed["rounds"]) == 3
    bs._check_paths(r)
    bs._ratios(r)
    side, amb, direct = r["paths"]["sidecar"], r["paths"]["ambient"], r["paths"]["direct"]
    assert side["added_p50_per_pair_ms"] == pytest.approx(1.1 - 0.275) and side["meets_target"]
    assert amb["rps_vs_direct"] == pytest.approx(0.5)
    assert direct["added_p50_per_pair_ms"] is None and direct["meets_target"] is None
    slow = _result(0.25, 2.0, 0.5)
    bs._ratios(slow)
    assert not slow["paths"]["sidecar"]["meets_target"]


def test_a_path_that_missed_its_sidecars_is_refused() -> None:
    r = _result(0.25, 1.0, 0.5, counted=100)
    with pytest.raises(BenchError, match="did not cross both sidecars"):
        bs._check_paths(r)
    r = _result(0.25, 1.0, 0.5)
    r["paths"]["ambient"]["fixed"]["errors"] = 3
    with pytest.raises(BenchError, match="ambient: 3 requests failed"):
        bs._check_paths(r)
