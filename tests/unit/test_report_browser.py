"""Render index.html in Debian's headless chromium: the DOM and a real screenshot.

This catches what string checks cannot: a page that parses but renders
blank, or a matrix that the browser's parser rearranges.  It is skipped only
when chromium is not installed (``apt-get install -y chromium``; CI installs
it).  Set ``VHBA_LAB_SCREENSHOT_DIR`` to keep the screenshot for a look.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from lab.report.write import write_report

_spec = importlib.util.spec_from_file_location(
    "_report_samples", Path(__file__).with_name("test_results.py")
)
assert _spec and _spec.loader
samples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(samples)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium); CI installs it",
)
FAIL_RED = (0xCF, 0x22, 0x2E)  # --fail-bg in lab/report/html.py
SANITIZER_PURPLE = (0x4A, 0x10, 0x70)  # --san-bg
WINDOW = (1400, 900)


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
    ]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=180, env=env, check=False
    )


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and unfiltered rows of an 8-bit RGB/RGBA PNG (what chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), f"unsupported PNG: depth {depth} colour {colour}"
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = prev[i]
            upleft = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - upleft
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else upleft
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line) if bpp == 3 else bytes(b for j, b in enumerate(line) if j % 4 != 3))
        prev = line
    return width, height, rows


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reports")
    run_dir = root / "20261124T100000Z-a"
    run = samples.build_sample_run(run_dir)
    samples.add_sanitizer(run, run_dir)  # one KASAN row: the worst verdict must render too
    previous = samples.build_sample_run(None, "prev")
    write_report(run, run_dir, previous)
    return run_dir / "index.html"


def test_rendered_dom_has_matrix_and_badges(report: Path, tmp_path: Path) -> None:
    result = _chromium(tmp_path / "profile", "--dump-dom", report.as_uri())
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert '<table class="matrix" id="matrix">' in dom
    assert dom.count("data-status=") == 25  # 5 tests x 5 cells, nothing lost or moved
    assert dom.count('<th scope="col" class="col') == 5
    for status in ("sanitizer", "fail", "error", "pass", "known", "skip"):
        assert f'class="badge {status}"' in dom, status
    assert ">FAIL</a>" in dom and ">KNOWN</a>" in dom  # badges carry text, and link to logs
    assert 'data-status="sanitizer"' in dom
    assert 'href="6.9-ours-ours/mmc/test_get_configuration/sanitizer-1.txt">KASAN</a>' in dom
    assert 'class="repro"' in dom


def test_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    png = tmp_path / "index.png"
    result = _chromium(tmp_path / "profile", f"--screenshot={png}", report.as_uri())
    assert png.is_file(), f"no screenshot; chromium said:\n{result.stderr[-2000:]}"
    assert png.stat().st_size > 20_000, "screenshot is suspiciously small"

    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == WINDOW
    pixels: dict[bytes, int] = {}
    for row in rows[::3]:
        for x in range(0, len(row), 3 * 3):
            pixel = row[x : x + 3]
            pixels[pixel] = pixels.get(pixel, 0) + 1
    total = sum(pixels.values())
    assert len(pixels) > 50, "too few colours: the page did not render"
    assert max(pixels.values()) / total < 0.95, "the screenshot is (almost) one colour"
    assert bytes(FAIL_RED) in pixels, "no FAIL badge colour on screen"
    assert bytes(SANITIZER_PURPLE) in pixels, "no SANITIZER badge colour on screen"

    keep = os.environ.get("VHBA_LAB_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, Path(keep) / "index.png")
