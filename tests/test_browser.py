"""Headless Chromium clicks through the page: upload, prompt, Generate, wait for the video; watch the
live preview change while it runs; Extend the result into a longer video.

Uses Debian's /usr/bin/chromium through Python playwright (never `playwright install`). The
screenshots land in tests/artifacts/ (gitignored) for a human to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_tools import press_until, set_form, start_job, wait_while_running
from conftest import make_image
from ui_server import CHROMIUM, CHROMIUM_ARGS, running_app

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sunset_sea.jpg"
TIMEOUT_MS = 120_000  # bounds the waits on state (tiny model: seconds, much slower on a busy CPU)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    # a preview every 0.25 s (default 1 s): a 60-step tiny run can take only a few seconds
    root = tmp_path_factory.mktemp("browser")
    with running_app(root, preview_every_s=0.25) as app, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app.url)
        page.wait_for_selector("#generate")
        yield page
        browser.close()


def test_banner_says_the_tiny_model_is_active(page):
    page.wait_for_selector("#banner:has-text('TINY model')")  # the page-load event shows the loaded model
    text = page.inner_text("#banner")
    assert "TINY model" in text and "memory:" in text


def test_missing_prompt_is_flagged_on_the_field(page, tmp_path):
    picture = tmp_path / "input.png"
    make_image(96, 64).save(picture)
    set_form(page, picture, prompt="")
    press_until(page, "#generate", "text=must not be empty")  # refused: nothing queues
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui_validation.png"), full_page=True)


def test_upload_prompt_generate_shows_the_video(page):
    set_form(page, EXAMPLE, prompt="The sun slowly sinks into a calm sea", seed=42)
    start_job(page)
    wait_while_running(page, "document.querySelector('#seed-used input').value === '42'")
    page.wait_for_selector("#output-video video[src]")
    assert page.input_value("#final-prompt textarea") == "The sun slowly sinks into a calm sea"
    page.wait_for_function("document.querySelector('#output-video video').readyState >= 2")  # frame decoded
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui_generated.png"), full_page=True)


def test_progress_shows_steps_and_cancel_ends_the_run(page):
    set_form(page, EXAMPLE, prompt="A long run to watch and cancel", steps=100, video_length_s="10")
    start_job(page)
    page.wait_for_selector("text=/step \\d+\\/200/")  # progress from the worker's step callback
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui_progress.png"), full_page=True)
    page.click("#cancel")
    page.wait_for_selector("text=/step \\d+\\/200/", state="detached")


def preview_sources(page, until: str) -> list[str]:
    """Distinct sources the live preview showed before `until` (a JS condition) became true."""
    seen: list[str] = []
    wait_while_running(page, until, each=lambda src: src and src not in seen and seen.append(src))
    return seen


def test_live_preview_changes_during_a_run_and_extend_makes_a_longer_video(page):
    # 100 steps, the most allowed: several previews on CPU
    set_form(
        page, EXAMPLE, prompt="The sun slowly sinks into a calm sea", seed=7, steps=100, video_length_s="5"
    )
    start_job(page)
    page.wait_for_selector("#preview img")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui_preview.png"), full_page=True)
    done = "document.querySelector('#seed-used input').value === '7'"
    shown = preview_sources(page, done)
    assert len(shown) >= 2, shown  # the picture forms: the preview was replaced while denoising
    page.wait_for_selector("#output-video video[src]")
    assert not page.is_visible("#preview")  # the video took its place
    page.wait_for_function("document.querySelector('#output-video video').duration > 5")  # 81 frames
    first = page.get_attribute("#output-video video", "src")
    set_form(page, steps=4, next_prompt="The sky turns dark blue and the first stars appear")
    start_job(page, "#extend")
    longer = "first => (v => v && v.getAttribute('src') !== first && v.duration > 10)(document.querySelector('#output-video video'))"  # noqa: E501
    wait_while_running(page, longer, arg=first)  # 161 frames at 16 fps = 10.06 s
    page.screenshot(path=str(ARTIFACTS / "ui_extended.png"), full_page=True)
