"""The page remembers (headless Chromium, real app on the tiny model): a generation survives a
reload through `?job=` (progress and live preview resume), the history shows it, restore fills the
form (from the history item and from a dropped MP4), another browser (another user) sees none of it
and gets "not found" for the first one's link, delete removes the result and its files, and a server
restart keeps the history.

Launch flags and Chromium as in tests/test_browser.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from browser_tools import (
    STEP,
    open_section,
    press_until,
    set_control,
    set_form,
    start_job,
    wait_while_running,
)
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, EXAMPLE
from ui_server import free_port, running_app

from wan_demo.media.video import write_mp4

TIMEOUT_MS = 120_000  # page actions and generations (tiny model: seconds, slower on a busy CPU)
PROMPT = 'A "quoted" cat — 猫が歩く'
NOT_FOUND = "Not found."

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(context, url: str):
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#generate")
    return page


def start(page, prompt: str, seed: int, steps: int, length: str = "5") -> str:
    """Fill the form (the app holds every value), press Generate; returns the new job's id."""
    set_form(page, EXAMPLE, prompt=prompt, seed=seed, steps=steps, video_length_s=length)
    return start_job(page)


def current_step(page) -> tuple[int, int]:
    page.wait_for_selector("text=/step \\d+\\/\\d+/")
    step, total = STEP.search(page.inner_text("body")).groups()
    return int(step), int(total)


def wait_for_video(page, seed: int) -> None:
    wait_while_running(page, "document.querySelector('#output-video video[src]') !== null")
    page.wait_for_function(f"document.querySelector('#seed-used input').value === '{seed}'")


def history_items(page) -> int:
    return page.locator("#history .thumbnail-item").count()


def test_reload_history_restore_privacy_and_delete(browser, tmp_path):
    with running_app(tmp_path) as app:
        alice = browser.new_context(viewport={"width": 1280, "height": 1400})
        page = open_page(alice, app.url)
        job_id = start(page, PROMPT, seed=42, steps=100, length="10")  # 200 steps: time to reload
        before = current_step(page)
        page.reload()
        page.wait_for_selector("#generate")
        assert f"job={job_id}" in page.url
        after = current_step(page)  # the follower picked the running job up again
        page.wait_for_selector("#preview img")  # with the live preview where the video will appear
        assert before[1] == after[1] == 200 and after[0] >= before[0]
        wait_for_video(page, 42)
        assert page.input_value("#final-prompt textarea") == PROMPT
        page.wait_for_function("document.querySelectorAll('#history .thumbnail-item').length === 1")
        assert "seed 42" in page.inner_text("#history") and "10 s" in page.inner_text("#history")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui_history.png"), full_page=True)

        set_form(page, prompt="something else", seed=7)
        # the open result's settings back into the form
        press_until(page, "#restore", until="document.querySelector('#seed input').value === '42'")
        assert page.input_value("#prompt textarea") == PROMPT
        open_section(page, "Advanced", "#steps input[type=number]")  # closed again after the reload
        page.wait_for_function("document.querySelector('#steps input[type=range]').value === '100'")
        assert "Settings restored" in page.inner_text("#job-message")

        open_section(page, "Copy as code", "#show-code")
        page.click("#show-code")
        page.wait_for_selector("#code-python >> text=validate(")
        assert "api_name" in page.inner_text("#code-gradio") and "Bearer" in page.inner_text("#code-curl")

        video = next((Path(app.settings.output_dir) / "ui").glob("*.mp4"))
        set_control(page, "prompt", "again something else")
        page.set_input_files("#restore-file input[type=file]", str(video))  # dropping our MP4
        page.wait_for_function(f"document.querySelector('#prompt textarea').value === {PROMPT!r}")
        foreign = tmp_path / "foreign.mp4"
        write_mp4([np.zeros((32, 32, 3), np.uint8)] * 3, foreign, 16, {"title": "not ours"})
        page.set_input_files("#restore-file input[type=file]", str(foreign))
        page.wait_for_selector("#job-message >> text=No settings found in this file")

        bob = browser.new_context()
        other = open_page(bob, app.url + f"?job={job_id}")
        other.wait_for_selector(f"#job-message >> text={NOT_FOUND}")
        assert other.locator("#output-video video[src]").count() == 0 and history_items(other) == 0
        other.goto(app.url + "?job=not-even-an-id")
        other.wait_for_selector(f"#job-message >> text={NOT_FOUND}")
        other.screenshot(path=str(ARTIFACTS / "ui_history_other_user.png"), full_page=True)

        page.click("#delete")
        page.wait_for_selector("#job-message >> text=Deleted")
        page.wait_for_function("document.querySelectorAll('#history .thumbnail-item').length === 0")
        assert not video.exists() and "job=" not in page.url
        page.goto(app.url + f"?job={job_id}")
        page.wait_for_selector(f"#job-message >> text={NOT_FOUND}")


def test_a_finished_job_is_still_in_the_history_after_a_restart(browser, tmp_path):
    port = free_port()  # the same origin after the restart: the browser token lives in its localStorage
    context = browser.new_context()
    with running_app(tmp_path, port=port) as app:
        page = open_page(context, app.url)
        start(page, "before the restart", seed=5, steps=2)
        wait_for_video(page, 5)
        link = page.url
    with running_app(tmp_path, port=port) as app:
        page = open_page(context, app.url)
        page.wait_for_function("document.querySelectorAll('#history .thumbnail-item').length === 1")
        assert "before the restart" in page.inner_text("#history")
        page.goto(link)
        wait_for_video(page, 5)
