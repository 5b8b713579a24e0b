"""How the browser tests fill the form: one helper, `set_form`, sets controls the way a user does and
waits until the app holds every value, never on time alone.

Two waits, both on state:
1. each control until its committed value shows where the component renders it from its own state
   (a slider's range input, the checked radio, the field itself);
2. then the app itself is asked: "Show code for these settings" sends the form exactly as Generate
   does (the same inputs, the batch size aside, the same event path), and that request is read off
   the wire: the helper returns once the page sent every value set (and the image, by its name).
A value the app did not take (a keystroke lost while the page was busy) is set again, up to
ATTEMPTS times; then the test fails showing the snippet.

Jobs are followed by state as well: `start_job` presses Generate and waits until the page's URL
carries the new job; `wait_while_running` waits for a run's end for as long as the page shows it
moving ("step N/M", the live preview), so a busy CPU makes a test slower, never failed.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path

from wan_demo.web.handlers import INPUT_FIELDS

ATTEMPTS = 3  # times a control (or the form) is set before the test fails
SET_WAIT_MS = 20_000  # a set value shows within this (ms; a tiny re-render, even on a busy CPU)
# The form in the order "Show code" (and Generate, which adds the batch size) sends it: the public
# /generate order, read from the app (issue 24 appended fields); the snippet's name for the length
FORM = tuple("video_length_s" if name == "video_length" else name for name in INPUT_FIELDS)
CONTROLS = {  # the Python snippet's name -> (element id, kind)
    "prompt": ("#prompt", "text"),
    "seed": ("#seed", "number"),
    "video_length_s": ("#video-length", "radio"),
    "steps": ("#steps", "slider"),
    "guidance": ("#guidance", "slider"),
    "next_prompt": ("#extend-prompt", "text"),  # Extend's prompt (not part of the Generate form)
}
ADVANCED = ("steps", "guidance")  # inside the "Advanced" accordion
STALL_S = 120  # a run whose page shows no change for this long is stuck (a tiny-model step: < 5 s)
STEP = re.compile(r"step (\d+)/(\d+)")  # the progress line: step done / steps
BUTTON_ID = "id => window.gradio_config.components.find(c => c.props?.elem_id === id)?.id"


def open_section(page, title: str, inside: str) -> None:
    """Open an accordion (clicking its title toggles it) unless `inside` already shows."""
    if not page.is_visible(inside):
        page.click(f"text={title}")
        page.wait_for_selector(inside, state="visible")


def set_control(page, name: str, value) -> None:
    """One control, as a user sets it; returns once its committed value shows. A value that does not
    show within SET_WAIT_MS (a keystroke lost while the page re-rendered) is set again."""
    element, kind = CONTROLS[name]
    text = str(value)
    if kind == "radio":
        field = f'{element} input[type=radio][value="{text}"]'
        shown = f"document.querySelector('{field}')?.checked === true"
    else:
        field = {
            "text": f"{element} textarea",
            "number": f"{element} input",
            "slider": f"{element} input[type=number]",
        }[kind]
        at = f"{element} input[type=range]" if kind == "slider" else field
        shown = f"document.querySelector('{at}')?.value === {json.dumps(text)}"

    def act() -> None:
        if name in ADVANCED:
            open_section(page, "Advanced", f"{element} input[type=number]")
        if kind == "radio":
            page.click(f"{element} >> text={text}")
        else:
            page.fill(field, text)
            if kind in ("number", "slider"):  # a typed number commits on Enter
                page.press(field, "Enter")

    def wait() -> None:  # polling on a timer: animation frames may not run in a headless page
        page.wait_for_function(shown, polling=100, timeout=SET_WAIT_MS)

    until_held(act, wait, f"{name}: {text!r} shown ({shown})")


def set_form(page, image: Path | None = None, **values) -> None:
    """Upload `image` and set `values` (by GenerationRequest name: prompt, seed, video_length_s,
    steps, guidance); returns once the app holds all of them."""
    if image is not None:
        page.set_input_files("#input-image input[type=file]", str(image))
        page.wait_for_selector(f"#input-image img[src*='{image.name}']")  # uploaded and shown
    for _ in range(ATTEMPTS):
        for name, value in values.items():
            set_control(page, name, value)
        sent = form_sent(page)
        wrong = {n: sent[n] for n, value in values.items() if n in sent and not same(sent[n], value)}
        if image is not None and (sent["image"] or {}).get("orig_name") != image.name:
            wrong["image"] = sent["image"]
        if not wrong:
            return
        warnings.warn(f"the page sent {wrong}, not {values}: setting the form again", stacklevel=2)
    raise AssertionError(f"after {ATTEMPTS} tries the page still sends {wrong}, not {values}")


def same(sent, value) -> bool:
    """A value as the page sends it (numbers as numbers, the length as a string) equals `value`."""
    if isinstance(value, (int, float)) and isinstance(sent, (int, float)):
        return float(sent) == float(value)
    return str(sent) == str(value)


def form_sent(page) -> dict:
    """The form as the page sends it with an event, by name: "Show code for these settings" takes
    the same inputs as Generate, and its request to the queue is read off the wire."""
    open_section(page, "Copy as code", "#show-code")
    button = page.evaluate(BUTTON_ID, "show-code")

    def ours(request) -> bool:  # other events (a follower, an upload check) may join meanwhile
        return (
            "/queue/join" in request.url and json.loads(request.post_data or "{}").get("trigger_id") == button
        )

    with page.expect_request(ours) as request:
        page.click("#show-code")
    data = json.loads(request.value.post_data)["data"]  # the form, then the LoRA rows (web/lora_panel.py)
    assert len(data) >= len(FORM), (len(data), FORM)
    return dict(zip(FORM, data[: len(FORM)], strict=True))


def press_until(page, button: str, shown: str = "", until: str = "") -> None:
    """Press `button` until the selector `shown` appears (or the JS condition `until` holds). Only for a
    press that starts no job (a form refused by its check, Restore filling the form): pressing again
    is what a user does and changes nothing else."""

    def wait() -> None:
        if until:
            page.wait_for_function(until, polling=100, timeout=SET_WAIT_MS)
        else:
            page.wait_for_selector(shown, timeout=SET_WAIT_MS)

    until_held(lambda: page.click(button), wait, f"{shown or until!r} after pressing {button}")


def until_held(act, wait, what: str) -> None:
    """`act()`, then `wait()` up to SET_WAIT_MS (a Playwright wait); again when it times out, up to
    ATTEMPTS times. A pass that took more than one try warns: it may be an app bug, never silent."""
    from playwright.sync_api import TimeoutError as PageTimeout

    for attempt in range(ATTEMPTS):
        act()
        try:
            wait()
        except PageTimeout:
            continue
        if attempt:
            warnings.warn(f"{what}: held only after {attempt + 1} tries", stacklevel=3)
        return
    raise AssertionError(f"{what}: did not hold after {ATTEMPTS} tries")


JOB_PARAM = "new URLSearchParams(location.search).get('job')"


def start_job(page, button: str = "#generate") -> str:
    """Press Generate (or Extend) and return the new job's id once the page's URL carries it."""
    before = page.evaluate(JOB_PARAM)
    page.click(button)
    page.wait_for_function(f"before => {JOB_PARAM} && {JOB_PARAM} !== before", arg=before, polling=100)
    return page.evaluate(JOB_PARAM)


def wait_while_running(page, done: str, arg=None, each=None, stall_s: float = STALL_S) -> None:
    """Wait until the JS condition `done` (a function of `arg` when given) holds, for as long as the
    run shows progress: fails only when neither the step counter nor the live preview changed for
    `stall_s` seconds, whatever the run's total time. `each(preview_src)` sees every poll."""
    check = done if arg is None else f"(({done}))({json.dumps(arg)})"
    last, since = None, time.monotonic()
    while not page.evaluate(check):
        preview = page.evaluate("document.querySelector('#preview img')?.getAttribute('src') ?? null")
        if each is not None:
            each(preview)
        seen = (STEP.findall(page.inner_text("body")), preview)
        if seen != last:
            last, since = seen, time.monotonic()
        assert time.monotonic() - since < stall_s, f"no progress for {stall_s} s (last: {last}): {done}"
        page.wait_for_timeout(200)
