"""Reading headless Chromium's screenshots in tests: pixels through Pillow, not a home-made decoder."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

CHROMIUM = "/usr/bin/chromium"

Rgb = tuple[int, int, int]


def png_rows(path: Path) -> list[list[Rgb]]:
    """Every row of the image as RGB tuples (alpha dropped)."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        width, height = rgb.size
        # get_flattened_data replaces getdata from Pillow 12 on; older Pillow has only getdata.
        pixels = list(getattr(rgb, "get_flattened_data", rgb.getdata)())
    return [pixels[y * width:(y + 1) * width] for y in range(height)]


def png_colours(path: Path, sample_rows: int = 200) -> int:
    """Distinct colours in every 8th row of the first `sample_rows * 8` rows, every 4th pixel:
    a blank page has one or two, a rendered report dozens."""
    rows = png_rows(path)[: sample_rows * 8: 8]
    return len({px for row in rows for px in row[::4]})
