"""kiali-ambient-sidecar-mtls through the CLI: both verdicts, the wire, log and Prometheus
evidence behind them, and the report's two graphs as headless Chromium draws them.

The expected behaviour is kiali#7811's (Kiali 2.0: no lock on ambient → sidecar; the
controls locked) and mesh-facts-2 §A4 (HBONE to the sidecar; its destination series has an
unknown source; ztunnel's source series is mutual_tls), judged on real curl, AF_PACKET
copies, ztunnel's log and the lab's real Prometheus.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.kernel.screenshots import CHROMIUM, png_rows

pytestmark = pytest.mark.kernel

LAB = "kiali-ambient-sidecar-mtls"
LOCK = (0x15, 0x15, 0x15)  # render.py's padlock body: a filled 9 px wide #151515 rectangle


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("kasm")
    res = run_cli("lab", "run", LAB, "--report", str(out), "--json", timeout=180)
    data = json.loads(res.stdout)
    assert res.returncode == (0 if data["ok"] else 1), res.stderr
    return {"data": data, "dir": out}


def _result(run: dict[str, Any], variant: str) -> dict[str, Any]:
    r = next(r for r in run["data"]["results"] if r["variant"] == variant)
    assert r["ok"], json.dumps([v for v in r["verdicts"] if not v["held"]], indent=1) + str(r["error"])
    return r


def _edge(ev: dict[str, Any], version: str, src: str, dst: str) -> dict[str, Any]:
    return next(e for e in ev["kiali"]["edges"][version] if (e["source"], e["target"]) == (src, dst))


def test_both_variants_show_their_outcome_on_one_instance(run: dict[str, Any]) -> None:
    old, new = _result(run, "kiali-2.0"), _result(run, "kiali-2.1")
    assert (old["observed"]["word"], old["observed"]["good"]) == ("reproduced", False)
    assert (new["observed"]["word"], new["observed"]["good"]) == ("fixed", True)
    assert old["instance"] == new["instance"] and new["shared_with"] == ["kiali-2.0"]
    assert not os.path.isdir(f"/run/netlab/{old['instance']}")
    assert not any(n.startswith(f"nl-{old['instance']}-") for n in os.listdir("/run/netns"))


def test_the_request_is_mtls_in_the_log_and_on_the_wire(run: dict[str, Any]) -> None:
    ev = _result(run, "kiali-2.0")["evidence"]
    ip = ev["pods"]["ratings"]["ip"]
    line = next(x for x in ev["ztunnel_log"] if x["direction"] == "outbound")
    assert (line["dst.addr"], line["dst.hbone_addr"]) == (f"{ip}:15008", f"{ip}:9080")
    assert line["src.identity"] == "spiffe://cluster.local/ns/ns-a/sa/sleep"
    assert line["dst.identity"] == "spiffe://cluster.local/ns/ns-b/sa/bookinfo-ratings"
    w = ev["wire"]
    assert w["server_ports"] == [15008] and w["tls_handshakes_to_server"] >= 1
    assert not w["marker_seen"] and not w["http_seen"]
    assert all(c["http_code"] == "200" for cs in ev["clients"].values() for c in cs)


def test_the_series_say_why(run: dict[str, Any]) -> None:
    ev = _result(run, "kiali-2.1")["evidence"]
    sleep_id = "spiffe://cluster.local/ns/ns-a/sa/sleep"
    sidecar = [s for s in ev["series"] if s["__name__"] == "istio_requests_total" and s["reporter"] == "destination"
               and s["destination_workload"] == "ratings-v1" and s["source_principal"] == sleep_id]
    assert sidecar and all((s["source_workload"], s["connection_security_policy"], s["app"], s["pod"])
                           == ("unknown", "mutual_tls", "ratings", "ratings-v1-0") for s in sidecar)
    ztunnel = [s for s in ev["series"] if s.get("app") == "ztunnel" and s["reporter"] == "source"
               and s["source_workload"] == "sleep" and s["destination_workload"] == "ratings-v1"]
    assert ztunnel and all(s["connection_security_policy"] == "mutual_tls" for s in ztunnel)
    assert not [s for s in ev["series"] if s.get("app") == "ztunnel" and s["reporter"] == "destination"
                and s["destination_workload"] == "ratings-v1"]


def test_kiali_2_0_no_lock_2_1_lock_controls_locked_in_both(run: dict[str, Any]) -> None:
    ev = _result(run, "kiali-2.0")["evidence"]
    report = ("ns-a/sleep", "ns-b/ratings (service)")
    old, new = _edge(ev, "2.0", *report), _edge(ev, "2.1", *report)
    assert old["rate"] and old["isMTLS"] is None and not old["lock"]
    assert new["isMTLS"] == "100" and new["lock"]
    for control in (("ns-a/sleep", "ns-a/details (service)"), ("ns-b/curl", "ns-a/details (service)"),
                    ("ns-b/curl", "ns-b/ratings (service)")):
        for version in ("2.0", "2.1"):
            assert _edge(ev, version, *control)["lock"], (version, control)


def _padlocks(rows: list[list[tuple[int, int, int]]]) -> list[tuple[int, int]]:
    """(x, y) of each padlock body: rows of >= 7 px of exactly #151515, stacked at one x."""
    runs = []
    for y, row in enumerate(rows):
        n = 0
        for x, px in enumerate(row + [(255, 255, 255)]):
            if px == LOCK:
                n += 1
            else:
                if n >= 7:
                    runs.append((x - n, y))
                n = 0
    locks: list[tuple[int, int]] = []
    last: dict[int, int] = {}
    for x, y in runs:
        near = next((k for k in last if abs(k - x) <= 1 and y - last[k] <= 1), None)
        if near is None:
            locks.append((x, y))
            last[x] = y
        else:
            last[near] = y
    return locks


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no /usr/bin/chromium")
def test_report_in_headless_chromium_has_one_more_padlock_in_2_1(run: dict[str, Any]) -> None:
    """The report's graph figure: Kiali 2.0 on the left, 2.1 on the right, from one run.
    The right graph draws exactly one more padlock (sleep → ratings) than the left."""
    page = Path(run["dir"]) / "report.html"
    png = Path(run["dir"]) / "shot.png"
    width = 1300
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={run['dir'] / 'profile'}", f"--screenshot={png}",
                    f"--window-size={width},8000", f"file://{page}"], capture_output=True, timeout=120)
    rows = png_rows(png)
    locks = _padlocks(rows)
    left = [p for p in locks if p[0] < width // 2]
    right = [p for p in locks if p[0] >= width // 2]
    figures = page.read_text().count("The graph of ns-a and ns-b")  # one per variant section
    assert figures == 2 and left, locks
    assert len(right) == len(left) + figures, (left, right)
