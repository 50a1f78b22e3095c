"""Render a real lab report and screenshot it with headless Chromium: it must not be blank."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.kernel.screenshots import CHROMIUM, png_colours

@pytest.mark.kernel
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no /usr/bin/chromium")
def test_report_html_screenshot(tmp_path: Path) -> None:
    report = tmp_path / "report"
    res = run_cli("lab", "run", "mirrord-ambient-steal", "--variant", "fix-unprivileged",
                  "--report", str(report), timeout=120)
    assert res.returncode == 0, res.stderr
    page = report / "report.html"
    text = page.read_text()
    assert "<svg" in text and "ListenDrops" in text and "MIRRORD_OUTPUT" in text
    png = tmp_path / "shot.png"
    profile = tmp_path / "chromium-profile"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,1600",
                    f"file://{page}"], capture_output=True, timeout=90)
    assert png.exists() and png.stat().st_size > 10_000
    assert png_colours(png) > 20  # a blank page has one or two
    keep = os.environ.get("NETLAB_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(png, keep)
