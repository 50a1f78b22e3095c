"""Ask a lab's Prometheus: instant and range queries over its HTTP API, and waiting for a series.

The Prometheus addon (netlab/plan/addons/prometheus.py) listens inside the lab's fabric
netns, never on the host. So every request here goes over a TCP socket *created inside
that netns* (the thread enters it just long enough to make the socket, which stays
there), the way `kubectl port-forward` reaches a pod without exposing it. Needs root,
as every lab namespace does.

`wait_for_series` is how labs and tests wait on telemetry: poll until the series is
there or the deadline passes, never a fixed sleep.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import urllib.parse
from typing import Any

from netlab import mesh
from netlab.errors import NetlabError
from netlab.kernel import netns as nsmod
from netlab.kernel import query as labquery
from netlab.plan.addons.prometheus import NAME

Result = list[dict[str, Any]]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration ("5m", "1h30m", "500ms"); a bare number is seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise NetlabError(f"{text!r} is not a duration: write it as Prometheus does, e.g. 30s, 5m, 1h")
    return sum(float(n) * _UNITS[u] for n, u in parts)


class _NetnsConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket is made inside a network namespace."""

    def __init__(self, netns: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.netns = netns

    def connect(self) -> None:
        with nsmod.entered(self.netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Prometheus:
    """One lab's Prometheus, reached from inside the netns it runs in."""

    def __init__(self, netns: str, port: int = mesh.PROMETHEUS_PORT, host: str = "127.0.0.1",
                 timeout: float = 10.0, lab: str = "") -> None:
        self.netns, self.port, self.host, self.timeout, self.lab = netns, port, host, timeout, lab

    @classmethod
    def of_lab(cls, lab: str) -> "Prometheus":
        """The Prometheus of a running lab, or one clear error saying how to get one."""
        record = labquery.record_of(lab)
        procs = [p for p in record.processes if p.name == NAME]
        if not procs:
            raise NetlabError(f"lab {lab} runs no Prometheus: set `spec.prometheus.enabled: true` in its "
                              "Lab document, or build it with `netlab up --prometheus`")
        labquery.ensure_lab_netns(record)
        return cls(procs[0].netns, lab=lab)

    # -- HTTP ------------------------------------------------------------------------------
    def request(self, path: str, params: dict[str, str] | None = None) -> tuple[int, bytes]:
        """GET `path` (with query parameters); (status, body)."""
        url = path + ("?" + urllib.parse.urlencode(params) if params else "")
        conn = _NetnsConnection(self.netns, self.host, self.port, self.timeout)
        try:
            conn.request("GET", url)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except OSError as e:
            raise NetlabError(f"Prometheus of lab {self.lab or self.netns} did not answer on "
                              f"{self.host}:{self.port} in {self.netns}: {e}") from None
        finally:
            conn.close()

    def api(self, path: str, params: dict[str, str]) -> Any:
        """The `data` of a Prometheus API answer; its own error text when it refuses."""
        status, body = self.request(path, params)
        try:
            doc = json.loads(body)
        except ValueError:
            raise NetlabError(f"Prometheus answered {status} with no JSON: {body[:200]!r}") from None
        if doc.get("status") != "success":
            raise NetlabError(f"Prometheus refused the query ({doc.get('errorType', status)}): "
                              f"{doc.get('error', body[:200])}")
        return doc["data"]

    def ready(self) -> bool:
        try:
            return self.request("/-/ready")[0] == 200
        except NetlabError:
            return False

    # -- queries ---------------------------------------------------------------------------
    def query(self, promql: str, at: float | None = None) -> Result:
        """An instant query: the API's `data.result` (a vector, or a scalar wrapped as one)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("/api/v1/query", params)
        if data.get("resultType") in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, promql: str, start: float, end: float, step: float) -> Result:
        """A range query: the API's matrix `data.result`."""
        data = self.api("/api/v1/query_range", {"query": promql, "start": f"{start:.3f}",
                                                 "end": f"{end:.3f}", "step": f"{step:g}"})
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health (`/api/v1/targets`)."""
        return list(self.api("/api/v1/targets", {"state": "active"})["activeTargets"])


def range_step(seconds: float, points: int = 250) -> float:
    """The step Prometheus' own graph page picks for a range: about 250 points, at least 1s."""
    return max(1.0, round(seconds / points))


def wait_for_series(prom: Prometheus | str, promql: str, timeout: float = 20.0,
                    min_series: int = 1, interval: float = 0.2) -> Result:
    """Poll `promql` until it returns at least `min_series` series; the last answer.

    `prom` is a Prometheus or a lab name. On timeout the error names the query and what
    the last answer held, so a lab's failure says which series never came.
    """
    p = Prometheus.of_lab(prom) if isinstance(prom, str) else prom
    deadline = time.monotonic() + timeout
    last: Result = []
    while True:
        try:
            last = p.query(promql)
        except NetlabError:
            last = []  # not ready yet (or a scrape not done): keep waiting until the deadline
        if len(last) >= min_series:
            return last
        if time.monotonic() > deadline:
            raise NetlabError(f"no series for {promql!r} in lab {p.lab or p.netns}'s Prometheus after "
                              f"{timeout:g}s (last answer: {len(last)} series)")
        time.sleep(interval)  # a poll of the condition, bounded by the deadline


def format_labels(metric: dict[str, str]) -> str:
    """`name{a="b",...}` as Prometheus prints a series."""
    name = metric.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def format_result(result: Result) -> list[str]:
    """Plain lines: one per instant sample, or a series line then its `ts value` points."""
    lines: list[str] = []
    for series in result:
        if "value" in series:
            lines.append(f"{format_labels(series['metric'])} {series['value'][1]}")
        else:
            lines.append(format_labels(series["metric"]))
            lines += [f"  {ts} {v}" for ts, v in series.get("values", [])]
    return lines
