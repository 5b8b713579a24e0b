"""LoRAs in the page (headless Chromium, real app on the tiny model): pick a LoRA from the library,
set its weight, generate (the video's metadata says which file ran at which weight), change the rows,
restore: the row shows that LoRA and weight again. Adding a file by upload offers it in the rows.

Launch flags and Chromium as in tests/test_browser.py; waits are on the page's state, never on time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_tools import press_until, set_form, start_job, wait_while_running
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, EXAMPLE
from ui_server import running_app

from bench.lora_files import write_lightx2v, write_musubi
from wan_demo.media.video import read_mp4_metadata
from wan_demo.model.tiny import build_tiny_pipeline

TIMEOUT_MS = 180_000  # page actions and generations (tiny model: seconds, slower on a busy CPU)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]


def pick(page, row: int, name: str) -> None:
    """Choose `name` in LoRA row `row` (Gradio's dropdown: type to filter, click the option)."""
    page.click(f"#lora-{row} input")
    page.fill(f"#lora-{row} input", name)
    page.click(f"ul[role=listbox] li:has-text('{name}')")
    page.wait_for_function(f"document.querySelector('#lora-{row} input').value === '{name}'")


def weight(page, row: int, value: str) -> None:
    box = f"#lora-scale-{row} input[type=number]"
    page.fill(box, value)
    page.press(box, "Enter")  # the slider takes the typed value on Enter: wait for it before Generate
    page.wait_for_function(
        f"document.querySelector('#lora-scale-{row} input[type=range]').value === '{value}'"
    )


def test_pick_weight_generate_restore_and_add(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    library = tmp_path / "loras"
    library.mkdir()
    transformer = build_tiny_pipeline().transformer
    write_lightx2v(transformer, library / "motion.safetensors")
    upload = write_musubi(transformer, tmp_path / "zoom_in.safetensors").path
    with running_app(tmp_path, lora_dir=library) as app, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app.url)
        page.wait_for_selector("#generate")
        page.click("text=LoRAs: motion and effect LoRAs")
        page.wait_for_selector("#lora-library >> text=motion.safetensors")  # the library, listed
        pick(page, 0, "motion.safetensors")
        weight(page, 0, "0.6")
        set_form(page, EXAMPLE, prompt="the sea moves", seed=11)
        start_job(page)
        wait_while_running(page, "document.querySelector('#seed-used input').value === '11'")
        page.wait_for_selector("#output-video video[src]")
        video = next((Path(app.settings.output_dir) / "ui").glob("*.mp4"))
        (ran,) = read_mp4_metadata(video)["settings"]["loras"]
        assert (ran["name"], ran["scale"], ran["applied"]) == ("motion.safetensors", 0.6, "unfused adapter")

        weight(page, 0, "1.5")  # change the rows, then restore the result's settings
        press_until(
            page,
            "#restore",
            until="document.querySelector('#lora-scale-0 input[type=range]').value === '0.6'",
        )
        assert page.input_value("#lora-0 input") == "motion.safetensors"
        assert page.input_value("#seed input") == "11"

        page.set_input_files("#lora-upload input[type=file]", str(upload))  # add a file of one's own
        page.wait_for_selector("#job-message >> text=Added zoom_in.safetensors (musubi layout) in row 2")
        assert page.input_value("#lora-1 input") == "zoom_in.safetensors (added)"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui_loras.png"), full_page=True)
        browser.close()
