"""Render a real lab report and screenshot it with headless Chromium: it must not be blank."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.conftest import run_cli

CHROMIUM = "/usr/bin/chromium"


def png_colours(path: Path, sample_rows: int = 200) -> int:
    """Distinct pixel values in a sample of rows, with a tiny zlib PNG decoder (8-bit RGB/RGBA)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    bpp = 3
    while pos < len(data):
        length, ctype = struct.unpack("!I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            width, height, depth, colour = struct.unpack("!IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6)
            bpp = 4 if colour == 6 else 3
        elif ctype == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    seen: set[bytes] = set()
    for row in range(min(sample_rows * 8, len(raw) // (stride + 1))):
        f = raw[row * (stride + 1)]
        line = bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        if row % 8 == 0:
            seen.update(bytes(line[i:i + bpp]) for i in range(0, stride, bpp * 4))
    return len(seen)


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
