"""report.html renders in headless Chromium: a real screenshot and the rendered DOM keep the table and the chart."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from harness.report import write_report


def _load_samples():
    """The sample reports of the unit tests, loaded by path (test folders are not packages)."""
    path = Path(__file__).resolve().parents[1] / "unit" / "test_report_writers.py"
    spec = importlib.util.spec_from_file_location("_drill_report_samples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_samples = _load_samples()
missed_report, aborted_report = _samples.missed_report, _samples.aborted_report

pytestmark = pytest.mark.slow


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(candidate) if not os.path.isabs(candidate) else (candidate if os.path.exists(candidate) else None)
        if found:
            return found
    return None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); CI installs it")


def _run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _screenshot(tmp_path: Path, html: Path, name: str) -> Path:
    png = tmp_path / f"{name}.png"
    proc = _run_chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,2000", html.resolve().as_uri())
    assert png.is_file(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return png


@needs_chromium
@pytest.mark.parametrize("make", [missed_report, aborted_report], ids=["missed", "aborted"])
def test_report_html_screenshot_and_dom(tmp_path: Path, make):
    paths = write_report(make(), tmp_path / "report")
    png = _screenshot(tmp_path, paths["html"], make.__name__)
    keep = os.environ.get("DRILL_KEEP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / png.name)

    assert png.stat().st_size > 20_000, "screenshot is suspiciously small"
    with Image.open(png) as img:
        assert img.size == (1280, 2000)
        rgb = img.convert("RGB")
        lo_hi = rgb.getextrema()
        assert any(hi - lo > 100 for lo, hi in lo_hi), "screenshot is a single colour"
        assert len(rgb.resize((320, 500)).getcolors(maxcolors=1 << 16) or []) > 16, "screenshot has too few colours"
        # the verdict banner is painted at the top: a saturated, non-white band
        top = ImageStat.Stat(rgb.crop((0, 0, 1280, 60))).mean
        assert sum(top) / 3 < 200, f"no status banner at the top (mean colour {top})"

    dom = _run_chromium(tmp_path, "--dump-dom", paths["html"].resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="objectives"' in dom.stdout
    assert 'id="timeline-chart"' in dom.stdout
    assert "<svg" in dom.stdout
