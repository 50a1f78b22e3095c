"""kiali-waypoint-tcp-charts through the CLI: both verdicts, the Prometheus evidence behind
them, and the report's side-by-side charts as headless Chromium draws them.

The expected behaviour is kiali#7774's (the pre-kiali#7784 panel's TCP charts of a
waypoint → server edge are null) and mesh-facts-2 §C3 (who reports each leg), judged on
the lab's real Prometheus answers, never on netlab's own claims.
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

LAB = "kiali-waypoint-tcp-charts"
FROM, TO = "waypoint->ratings-v1", "sleep->waypoint"
BASELINE = (0xd2, 0xd2, 0xd2)  # a drawn chart's zero line (render.sparkline_svg); nothing else has it


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("kwtc")
    res = run_cli("lab", "run", LAB, "--report", str(out), "--json", timeout=180)
    data = json.loads(res.stdout)
    assert res.returncode == (0 if data["ok"] else 1), res.stderr
    return {"data": data, "dir": out}


def _result(run: dict[str, Any], variant: str) -> dict[str, Any]:
    r = next(r for r in run["data"]["results"] if r["variant"] == variant)
    assert r["ok"], json.dumps([v for v in r["verdicts"] if not v["held"]], indent=1) + str(r["error"])
    return r


def test_both_variants_show_their_outcome_on_one_instance(run: dict[str, Any]) -> None:
    old, new = _result(run, "kiali-1.89"), _result(run, "kiali-2.0")
    assert (old["observed"]["word"], old["observed"]["good"]) == ("reproduced", False)
    assert (new["observed"]["word"], new["observed"]["good"]) == ("fixed", True)
    assert old["instance"] == new["instance"] and old["shared_with"] == ["kiali-2.0"]
    assert not os.path.isdir(f"/run/netlab/{old['instance']}")
    assert not any(n.startswith(f"nl-{old['instance']}-") for n in os.listdir("/run/netns"))


def test_old_panel_gets_null_while_prometheus_holds_the_leg(run: dict[str, Any]) -> None:
    ev = _result(run, "kiali-1.89")["evidence"]
    old = ev["kiali"]["panels"]["1.89"][FROM]
    assert [c["name"] for c in old] == ["tcp_sent", "tcp_received"]
    for c in old:
        assert c["null"] and c["points"] == [] and c["message"] == "Not enough traffic to generate chart"
        assert 'reporter="source",destination_workload_namespace="bookinfo",destination_workload="ratings-v1"' \
            in c["promql"] and c["promql"].endswith("[10s])) by (source_workload)")
    # The bytes of that leg are in Prometheus, reported by the destination ztunnel only.
    leg = [s for s in ev["series"] if s.get("source_workload") == "waypoint"
           and s.get("destination_workload") == "ratings-v1"]
    assert leg and {(s["reporter"], s["app"]) for s in leg} == {("destination", "ztunnel")}
    assert all(s["value"] == 5000 for s in leg)  # 1000 + 4000 bytes each way, as the clients sent
    assert [(c["sent"], c["echoed"]) for c in ev["clients"]] == [(1000, 1000), (4000, 4000)]
    # The waypoint reports its own hop as reporter="waypoint" (scraped from its pod).
    assert any(s["reporter"] == "waypoint" and s["pod"] == "waypoint-0" for s in ev["series"])


def test_fixed_panel_charts_the_destination_ztunnel_series(run: dict[str, Any]) -> None:
    ev = _result(run, "kiali-2.0")["evidence"]
    for c in ev["kiali"]["panels"]["2.0"][FROM]:
        assert c["reporter"] == "destination" and not c["null"] and c["message"] is None
        assert [s["source_workload"] for s in c["series"]] == ["waypoint"]
        assert max(v for _, v in c["points"]) > 0


def test_edge_to_the_waypoint_has_data_in_both(run: dict[str, Any]) -> None:
    ev = _result(run, "kiali-2.0")["evidence"]
    for version in ("1.89", "2.0"):
        for c in ev["kiali"]["panels"][version][TO]:
            assert c["reporter"] == "source" and max(v for _, v in c["points"]) > 0


def _baselines(rows: list[list[tuple[int, int, int]]], min_run: int = 100) -> list[int]:
    """x of each drawn chart's zero line: a run of exactly BASELINE at least `min_run` long."""
    found = []
    for row in rows:
        run, start = 0, 0
        for x, px in enumerate(row + [(0, 0, 0)]):
            if px == BASELINE:
                start = x if run == 0 else start
                run += 1
            else:
                if run >= min_run:
                    found.append(start)
                run = 0
    return found


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no /usr/bin/chromium")
def test_report_in_headless_chromium_shows_old_and_new_charts_side_by_side(run: dict[str, Any]) -> None:
    """The report's first panel figure: Kiali 1.89 on the left draws 2 charts (sleep →
    waypoint) and prints its placeholder for waypoint → ratings-v1; Kiali 2.0 on the right
    draws all 4. Each drawn chart has a crisp zero line no other element of the page has."""
    page = Path(run["dir"]) / "report.html"
    text = page.read_text()
    assert text.count("Not enough traffic to generate chart") >= 2 and "<svg" in text
    png = Path(run["dir"]) / "shot.png"
    width = 1300
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={run['dir'] / 'profile'}", f"--screenshot={png}",
                    f"--window-size={width},6000", f"file://{page}"], capture_output=True, timeout=120)
    rows = png_rows(png)
    # The graphs: Kiali's edge green (#3e8635, exact in the filled arrowheads) and node
    # borders near #2b9af3 (scaled to the column, so antialiased).
    assert any(px == (0x3e, 0x86, 0x35) for row in rows for px in row)
    assert sum(1 for row in rows for px in row
               if sum(abs(a - b) for a, b in zip(px, (0x2b, 0x9a, 0xf3))) <= 40) >= 50
    xs = _baselines(rows)
    left = [x for x in xs if x < width // 4]  # the columns start near 2.5 % and 49 % of the width
    right = [x for x in xs if x >= width // 4]
    # Each variant's section repeats the figure; per figure: 2 charts on the left, 4 on the right.
    assert left and len(right) == 2 * len(left), (left, right)
