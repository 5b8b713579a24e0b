"""The README's REST API curl block, run as written against a test server (tiny model, 127.0.0.1).

The block is the ```bash fence of the `## REST API` section of README.md. Only the server address
on the `export` line is replaced (the test server listens on a free port)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from apitools import api_settings, serve

from wan_demo.media.video import count_frames

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## REST API"


def curl_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION + "\n" in text, f"README.md has no {SECTION!r} section"
    section = text.split(SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert blocks, f"no ```bash block under {SECTION!r} in README.md"
    return blocks[0]


@pytest.mark.skipif(not shutil.which("curl") or not shutil.which("base64"), reason="needs curl and base64")
def test_readme_curl_examples_run(engine, tmp_path):
    script = curl_block()
    assert "export WAN=http://127.0.0.1:7860 WAN_KEY=change-me" in script
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    # 10 steps: the extension runs long enough on CPU for the script to see its live preview
    with serve(api_settings(tmp_path, api_keys="change-me", steps=10), engine) as (url, _service, _worker):
        script = script.replace("WAN=http://127.0.0.1:7860", f"WAN={url}", 1)
        run = subprocess.run(
            ["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=180
        )
    assert run.returncode == 0, run.stderr
    assert (
        '"model_ids":["Wan-AI_Wan2.1-I2V-14B-480P"]' in run.stdout and '"resolution":"832x480"' in run.stdout
    )
    assert '"status":"success"' in run.stdout and '"seed_used":42' in run.stdout
    assert (tmp_path / "video.mp4").read_bytes()[4:8] == b"ftyp"
    assert (tmp_path / "thumbnail.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert '"code":"not_cancellable"' in run.stdout
    preview = (tmp_path / "preview.webp").read_bytes()
    assert preview[:4] == b"RIFF" and preview[8:12] == b"WEBP"  # the extension's live preview
    assert count_frames(tmp_path / "joined.mp4")[0] == 161  # the 81 frames of video.mp4, then 80 new
