"""wrk, the HTTP load generator the benches drive (Debian's `wrk`), and its report.

One place for running it inside a client pod's netns and reading its `--latency`
report, so `bench sidecar` and `bench waypoint` measure the same way.
"""

from __future__ import annotations

import re
from typing import Any

from netlab.bench.hbone import CpuMeter
from netlab.errors import BenchError
from netlab.kernel.processes import run_in

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_PCT = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)


def parse_wrk(text: str) -> dict[str, Any]:
    """wrk 4.1's `--latency` report → requests/s, p50/p75/p90/p99 (ms), requests, errors."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m)", text, re.M)
    if rps is None or total is None:
        raise BenchError(f"wrk printed no result: {text[-400:]}")
    pct = {f"p{p}_ms": float(v) * _UNIT[u] for p, v, u in _PCT.findall(text)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {"rps": float(rps[1]), "requests": int(total[1]), **pct,
            "errors": (int(non2xx[1]) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)}


def run_wrk(netns: str, url: str, host: str, seconds: int, connections: int) -> dict[str, Any]:
    """One wrk run (one thread, `connections` keep-alive connections) in the client's netns."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {host}", url]
    with CpuMeter() as cpu:
        try:
            res = run_in(netns, argv, capture_output=True, text=True, timeout=seconds + 30)
        except FileNotFoundError:
            raise BenchError("wrk is not installed; install Debian's package `wrk` "
                             "(apt-get install -y wrk, or scripts/setup.sh)") from None
    if res.returncode != 0:
        raise BenchError(f"wrk failed ({res.returncode}): {res.stderr[-400:] or res.stdout[-400:]}")
    out = parse_wrk(res.stdout)
    out["cpu_cores"] = cpu.cores
    out["cpu_ms_per_request"] = cpu.busy_s * 1e3 / max(1, out["requests"])
    return out
