"""Re-make the README's picture of the app mid-generation: `python tests/screenshot.py [--out PATH]`.

Starts the real app in this process (the built-in tiny model on the CPU, a free 127.0.0.1 port, a
temporary data folder), drives it in headless Debian Chromium through Python playwright (never
`playwright install`): uploads an example image, types a prompt, presses Generate, waits until the
live preview is showing and the progress line reads "step N/M", screenshots the page, then cancels
the run and stops the app. Prints what the page showed at that moment as one JSON line
(tests/test_screenshot.py checks it). The tiny model's weights are random: its preview is noise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("docs/images/app.png")  # relative to the repository root; README shows this path
EXAMPLE = ROOT / "examples" / "sunset_sea.jpg"
PROMPT = "The sun slowly sinks into a calm sea, golden light on gentle waves"
VIEWPORT = {"width": 1280, "height": 1040}  # px: the form down to Generate; the PNG is this size
STEPS = 60  # denoising steps of the run: long enough on a CPU to catch it half-way
MIN_STEP = 12  # screenshot once this many steps ran (the preview has been replaced a few times)
PREVIEW_EVERY_S = 0.5  # a fresh live preview at most every half second (the app's default is 1 s)
TIMEOUT_MS = 180_000  # page waits, the run included (a busy 2-core machine is slow)
PROGRESS = re.compile(r"step (\d+)/(\d+)")
AT_STEP = """min => {
  const found = /step (\\d+)\\//.exec(document.querySelector('#status')?.innerText ?? '');
  return found !== null && Number(found[1]) >= min;
}"""  # JS: the progress line reads "step N/M" with N >= min


def showing(page) -> dict:
    """What the page shows now: the progress line and whether the live preview image is visible."""
    status = page.inner_text("#status")
    found = PROGRESS.search(status)
    step, total = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    preview = page.is_visible("#preview img") and bool(page.get_attribute("#preview img", "src"))
    return {"progress": status.strip(), "step": step, "total_steps": total, "preview_visible": preview}


def take(out: Path) -> dict:
    """Run the app, catch it mid-generation, write the PNG to `out`; returns what the page showed."""
    from browser_tools import set_form, start_job
    from playwright.sync_api import sync_playwright
    from ui_server import CHROMIUM, CHROMIUM_ARGS, running_app

    from wan_demo.core.settings import Settings

    out.parent.mkdir(parents=True, exist_ok=True)
    tiny_area = Settings().tiny_max_area  # the tiny model's default size, as `python app.py` runs it
    changes = dict(tiny_max_area=tiny_area, steps=STEPS, preview_every_s=PREVIEW_EVERY_S)
    with (
        tempfile.TemporaryDirectory(prefix="wan-screenshot-") as root,
        running_app(Path(root), **changes) as app,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(app.url)
            page.wait_for_selector("#generate")
            set_form(page, EXAMPLE, prompt=PROMPT, seed=42)
            start_job(page)
            page.wait_for_selector("#preview img[src]")
            page.wait_for_function(AT_STEP, arg=MIN_STEP)
            page.evaluate("window.scrollTo(0, 0)")  # typing and clicking scrolled the form into view
            seen = showing(page)
            page.screenshot(path=str(out))
            page.click("#cancel")  # the run is not needed further
        finally:
            browser.close()
    return {"path": str(out), **seen}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / DEFAULT_OUT, help=f"PNG to write ({DEFAULT_OUT})")
    args = parser.parse_args(argv)
    print(json.dumps(take(args.out)))


if __name__ == "__main__":
    sys.path.insert(1, str(ROOT))  # the package from this checkout (python puts only tests/ on the path)
    main()
