"""Layout and wiring of the page's memory: identity, `?job=` in the URL, the history gallery,
restore settings (history item or MP4), delete, and "Copy as code" (handlers: web/page.py); and the
page's generation buttons, each followed by the follower of the page's job (web/session.py).

All of these events are private (api_visibility="private"): the Gradio API stays `/generate` and
`/extend` (web/api.py, wired in web/ui.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from wan_demo.web.history import PageView
from wan_demo.web.lora_panel import code_with_loras
from wan_demo.web.page import Page
from wan_demo.web.session import Session

TOKEN_KEY = "wan-demo-owner"  # localStorage key of the anonymous browser token
# gr.BrowserState encrypts with a secret it also sends to the page, so the secret protects nothing;
# a fixed one lets the token survive a server restart (a random one would make it unreadable).
TOKEN_SECRET = "wan-demo-browser-token"
# Mirror the page's job into the address bar (?job=<id>) without reloading.
URL_JS = """(id) => {
  const url = new URL(window.location.href);
  if (id) { url.searchParams.set("job", id); } else { url.searchParams.delete("job"); }
  window.history.replaceState(null, "", url);
}"""
PRIVATE = {"api_visibility": "private"}


@dataclass
class Memory:
    """The components this module adds (see `build`)."""

    token: gr.BrowserState
    view: gr.State
    job_box: gr.Textbox
    message: gr.Markdown
    gallery: gr.Gallery
    page_label: gr.Markdown
    buttons: dict[str, gr.Button]  # history paging, restore, delete (see history_panel)
    restore_file: gr.File
    page_state: gr.State
    ids: gr.State
    code_button: gr.Button
    codes: list[gr.Code]


def identity() -> tuple[gr.BrowserState, gr.State, gr.Textbox]:
    """The browser token (localStorage), the tab's shown job, and the job id the URL mirrors."""
    token = gr.BrowserState(None, storage_key=TOKEN_KEY, secret=TOKEN_SECRET)
    view = gr.State(PageView())  # Gradio deep-copies it: one PageView per tab
    job_box = gr.Textbox(visible="hidden", elem_id="job-id", label="job")
    return token, view, job_box


def code_panel() -> tuple[gr.Button, list[gr.Code]]:
    with gr.Accordion("Copy as code", open=False, elem_id="copy-as-code"):
        button = gr.Button("Show code for these settings", elem_id="show-code", size="sm")
        codes = [
            gr.Code(label="gradio_client (Python)", language="python", elem_id="code-gradio"),
            gr.Code(label="curl (REST API)", language="shell", elem_id="code-curl"),
            gr.Code(label="Python generate()", language="python", elem_id="code-python"),
        ]
    return button, codes


def history_panel() -> tuple[gr.Gallery, gr.Markdown, dict[str, gr.Button], gr.File]:
    with gr.Accordion("History: your results, newest first", open=True, elem_id="history-panel"):
        gallery = gr.Gallery(
            label="Click one to open it", elem_id="history", columns=6, height=280, preview=False,
            allow_preview=False, interactive=False, object_fit="contain",
        )  # fmt: skip
        with gr.Row():
            buttons = {
                "newer": gr.Button("◀ Newer", elem_id="history-newer", size="sm"),
                "refresh": gr.Button("Refresh", elem_id="history-refresh", size="sm"),
                "older": gr.Button("Older ▶", elem_id="history-older", size="sm"),
            }
            label = gr.Markdown("", elem_id="history-page")
        with gr.Row():
            buttons["restore"] = gr.Button("Restore settings of the open result", elem_id="restore")
            buttons["delete"] = gr.Button("Delete the open result", variant="stop", elem_id="delete")
        restore_file = gr.File(
            label="Restore settings from an MP4 made here (drop it)", file_types=[".mp4"],
            type="filepath", elem_id="restore-file", height=120,
        )  # fmt: skip
    return gallery, label, buttons, restore_file


def follower(session: Session, page: Page, m: Memory, shown: list):
    """`then_follow(event)`: after `event`, follow the page's job into `shown` (status line, preview,
    video, thumbnail, final prompt, seed used, message), then refresh the history. The follower is
    async (no thread held while it waits) and shows progress on its own status line."""
    history = [m.gallery, m.page_label, m.ids, m.page_state]
    follow = {"show_progress": "hidden", "concurrency_limit": None, **PRIVATE}

    def then_follow(event):
        """Returns the last event of the chain (the batch strip refreshes after it)."""
        return event.then(session.follow, [m.token, m.view], shown, **follow).then(
            page.history_at, [m.token, m.page_state], history, **PRIVATE
        )

    return then_follow


def wire_runs(session: Session, page: Page, m: Memory, runs: list[tuple], then_follow) -> None:
    """Each (button, handler, inputs, validator) queues a job for the visitor; the page then shows
    it in the address bar, in the history and through the follower."""
    history = [m.gallery, m.page_label, m.ids, m.page_state]
    m.job_box.change(None, [m.job_box], None, js=URL_JS, **PRIVATE)
    for button, handler, inputs, validator in runs:
        submitted = button.click(
            handler, [m.token, m.view, *inputs], [m.job_box, m.message], validator=validator, **PRIVATE
        )
        then_follow(submitted.success(page.history_at, [m.token, m.page_state], history, **PRIVATE))


def wire(page: Page, m: Memory, form: list, shown: list, cancel_btn: gr.Button, then_follow,
         loras: list | None = None) -> None:  # fmt: skip
    """Cancel, history, restore, delete, code. `form` is the /generate inputs (image first), `shown`
    what the follower updates (session.follow's outputs), `loras` the LoRA rows (web/lora_panel.py)."""
    history = [m.gallery, m.page_label, m.ids, m.page_state]
    cancel_btn.click(page.cancel, [m.token, m.view], [m.message], queue=False, **PRIVATE)
    then_follow(m.gallery.select(page.open_item, [m.token, m.view, m.ids], [m.job_box, m.message], **PRIVATE))
    for name, handler in (
        ("newer", page.history_newer),
        ("older", page.history_older),
        ("refresh", page.history_at),
    ):
        m.buttons[name].click(handler, [m.token, m.page_state], history, **PRIVATE)
    m.buttons["delete"].click(page.delete, [m.token, m.view], [m.job_box, *shown], **PRIVATE).then(
        page.history_at, [m.token, m.page_state], history, **PRIVATE
    )
    final_prompt, message = shown[4], shown[6]
    m.buttons["restore"].click(page.restore_job, [m.token, m.view], [*form, final_prompt, message], **PRIVATE)
    restored = [*form[1:], final_prompt, message, m.restore_file]
    m.restore_file.upload(page.restore_file, [m.restore_file], restored, **PRIVATE)
    code = code_with_loras(page.code, len(form)) if loras else page.code
    m.code_button.click(code, [*form, *(loras or [])], m.codes, **PRIVATE)


def wire_load(demo: gr.Blocks, page: Page, m: Memory, then_follow) -> None:
    """On page load: the token (made on the first visit), the `?job=` job, the first history page."""
    loaded = demo.load(
        page.load, [m.token, m.view],
        [m.token, m.job_box, m.message, m.gallery, m.page_label, m.ids, m.page_state], **PRIVATE,
    )  # fmt: skip
    then_follow(loaded)
