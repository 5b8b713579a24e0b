"""The screenshot script, run as README says to re-make its picture (`python tests/screenshot.py`),
into a temp folder: a PNG of the page mid-generation, taken while the live preview was showing and
the progress line read "step N/M"."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from doctools import ROOT
from screenshot import VIEWPORT
from ui_server import CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]


def test_script_catches_the_app_mid_generation(tmp_path):
    pytest.importorskip("playwright.sync_api")
    out = tmp_path / "app.png"
    run = subprocess.run(
        [sys.executable, "tests/screenshot.py", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["path"] == str(out) and seen["preview_visible"], seen
    assert 0 < seen["step"] < seen["total_steps"], seen  # caught mid-run, not before or after
    assert f"step {seen['step']}/{seen['total_steps']}" in seen["progress"]
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"])
