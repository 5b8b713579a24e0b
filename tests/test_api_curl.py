"""The REST API's curl blocks, run as written against a test server (tiny model, 127.0.0.1): the
session of docs/rest-api.md (<!-- rest-curl-walkthrough -->) and README's short example
(<!-- rest-curl-example -->). Only the server address on the `export` line is replaced (the test
server listens on a free port)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from apitools import api_settings, serve
from doctools import ROOT, marked

from wan_demo.media.video import count_frames

EXPORT = "export WAN=http://127.0.0.1:7860 WAN_KEY=change-me"  # how both blocks start

MISSING = [tool for tool in ("curl", "base64", "jq") if not shutil.which(tool)]


@pytest.fixture(autouse=True)
def tools():
    """README's examples need curl, base64 and jq: skipped without them, except in CI, which installs
    them (.ci/run), so a failed install fails here instead of passing as a skip."""
    if MISSING:
        message = f"README's curl examples need {', '.join(MISSING)} on PATH (Debian packages curl, jq)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def run_block(script: str, engine, tmp_path) -> subprocess.CompletedProcess:
    """The block under `bash -e` in a folder holding examples/, against a fresh server."""
    assert script.startswith(EXPORT), script[:80]
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    # 10 steps: an extension runs long enough on CPU for the script to see its live preview
    with serve(api_settings(tmp_path, api_keys="change-me", steps=10), engine) as (url, _service, _worker):
        script = script.replace("WAN=http://127.0.0.1:7860", f"WAN={url}", 1)
        return subprocess.run(
            ["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=180
        )


def test_docs_curl_session_runs(engine, tmp_path):
    run = run_block(marked("rest-curl-walkthrough", "docs/rest-api.md"), engine, tmp_path)
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


def test_readme_curl_example_runs(engine, tmp_path):
    run = run_block(marked("rest-curl-example", "README.md"), engine, tmp_path)
    assert run.returncode == 0, run.stderr
    assert count_frames(tmp_path / "video.mp4")[0] == 81  # a 5 s clip
