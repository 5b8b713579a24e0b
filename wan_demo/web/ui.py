"""Gradio Blocks UI: layout and event wiring only. Handlers live in web/api.py (the public API),
web/session.py (the page's generation buttons and its follower) and web/page.py (the page's memory).

Two public API endpoints, `/generate` and `/extend`, on hidden triggers (their outputs are the plain
four, with the live preview streamed in the thumbnail slot). The page's buttons are private events
that queue a job for the visitor (web/owners.py) and then follow it, showing the preview where the
video will appear; the page's memory (history, `?job=` links, restore, copy as code) is laid out and
wired in web/panels.py. Every generation is a job in the one queue (jobs/) that the REST API shares;
the worker runs one at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from wan_demo.core.controls import CONTROLS, NUM_VIDEOS
from wan_demo.core.plan import EngineInfo
from wan_demo.core.settings import SEED_MAX, VIDEO_LENGTHS_S, Settings
from wan_demo.jobs.loading import FAILED, LOADING, Readiness
from wan_demo.jobs.service import JobService
from wan_demo.web import batch, lora_panel, panels
from wan_demo.web.api import example_runner, make_extend, make_generate, make_generate_with_loras
from wan_demo.web.components import guarded_upload
from wan_demo.web.handlers import AUTO, check_extend_inputs, check_inputs
from wan_demo.web.owners import oauth_enabled
from wan_demo.web.page import Page
from wan_demo.web.session import Session

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
CACHE_SWEEP_S = 3600  # how often Gradio sweeps its own copies of outputs, seconds
LOAD_POLL_S = 1.0  # the banner's refresh while the model loads, seconds
LOADING_NOTE = "The page works already: **Generate** queues your video; it starts once the model is ready."
FAILED_NOTE = "Generation is unavailable until the server is restarted with working settings (see its log)."
CSS = """
#banner.tiny { border-left: 4px solid #d97706; padding-left: 10px; }
#banner.loading { border-left: 4px solid #2563eb; padding-left: 10px; }
#banner.failed { border-left: 4px solid #dc2626; padding-left: 10px; }
#banner p { margin: 4px 0; }
"""
TITLE = "Wan2.1 image-to-video (14B, 480P)"
INTRO = (
    "Upload a picture, describe the motion, press **Generate**: a live preview forms where the video "
    "will appear. A 5 s clip is 81 frames at 16 fps (480P, aspect ratio kept); 10 s chains two 5 s "
    "passes (optionally with a second prompt). **New seed** re-rolls, **Use last frame** makes the "
    "result's last frame the input, **Extend** continues the result with the next prompt. Use the API "
    "link at the bottom to call `/generate` and `/extend` from code or as MCP tools."
)


def load_examples(folder: Path = EXAMPLES_DIR) -> list[list]:
    """Rows for gr.Examples from examples/examples.json: image, prompt, seed, length."""
    index = folder / "examples.json"
    if not index.is_file():
        return []
    rows = []
    for item in json.loads(index.read_text()):
        image = folder / item["image"]
        if image.is_file():
            length = str(item.get("length_s", 5))
            rows.append([str(image), item["prompt"], item.get("seed", 42), length])
    return rows


def banner_markdown(engine: EngineInfo, state: Readiness | None = None) -> tuple[str, list[str]]:
    """The banner: the model loading (with its progress), failed (with the reason), or what runs."""
    if state is not None and state.state == LOADING:
        return f"⏳ {_sentence(state.message())} {LOADING_NOTE}", ["loading"]
    if state is not None and state.state == FAILED:
        return f"❌ {_sentence(state.message())} {FAILED_NOTE}", ["failed"]
    if engine.is_tiny:
        return f"⚠️ {engine.banner}", ["tiny"]
    return engine.banner, []


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:].rstrip(".") + "."


def _banner_now(jobs: JobService) -> tuple[gr.Markdown, gr.Timer]:
    """The banner as it is now, and the timer that refreshes it: on only while the model loads."""
    state = jobs.model_state()
    text, classes = banner_markdown(jobs.engine_info(), state)
    return gr.Markdown(text, elem_classes=classes), gr.Timer(active=state.state == LOADING)


def _inputs(engine) -> list[gr.components.Component]:
    """The /generate parameters, in API order (see ui_handlers.INPUT_FIELDS)."""
    image = guarded_upload(gr.Image(
        label="Input image (JPEG, PNG or WEBP)", type="filepath", sources=["upload", "clipboard"],
        elem_id="input-image", height=320,
    ))  # fmt: skip
    prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt", placeholder="What should happen?")
    with gr.Row():
        extend = gr.Checkbox(label="Prompt extend", value=False, elem_id="prompt-extend")
        lengths = [str(s) for s in VIDEO_LENGTHS_S]  # strings: the API rejects ints for Radio
        length = gr.Radio(lengths, value="5", label="Video length (seconds)", elem_id="video-length")
    seed = gr.Number(label=f"Seed (-1 = random, 0..{SEED_MAX})", value=-1, precision=0, elem_id="seed")
    with gr.Accordion("Advanced", open=False):  # ranges and help from core/controls.py, as REST's
        negative = gr.Textbox(label="Negative prompt (empty = the default list; quality mode only)", lines=2)
        steps, guidance = _slider("steps", 1, "Steps"), _slider("guidance", 0.5, "Guidance")
        modes = [AUTO, *CONTROLS["speed_mode"].choices] if engine.fast_available else [AUTO, "quality"]
        speed_mode = gr.Radio(
            modes, value=AUTO, label="Speed mode (fast = step-distilled LoRA, 4 steps)",
            visible=engine.fast_available,
        )  # fmt: skip
        prompt_2 = gr.Textbox(
            label="Second prompt (10 s clips: the second 5 s; empty = the same prompt)", lines=2,
            elem_id="prompt-2",
        )  # fmt: skip
    return [image, prompt, extend, seed, length, negative, steps, guidance, speed_mode, prompt_2,
            *_more_inputs(engine)]  # fmt: skip


def _more_inputs(engine) -> list[gr.components.Component]:
    """Issue 24's /generate parameters, appended after prompt_2 (docs/controls.md): end frame, NAG
    (fast mode only), interpolation. flow_shift and fps stay REST and Python only."""
    with gr.Accordion("End frame, NAG, smoother motion", open=False, elem_id="more-controls"):
        last_image = guarded_upload(gr.Image(
            label="End frame (optional; same aspect ratio as the input): the clip ends on it",
            type="filepath", sources=["upload", "clipboard"], elem_id="last-image", height=200,
        ))  # fmt: skip
        nag = [
            _slider(name, 0.05 if name == "nag_alpha" else 0.5, label, visible=engine.fast_available)
            for name, label in (
                ("nag_scale", "NAG scale"),
                ("nag_tau", "NAG tau"),
                ("nag_alpha", "NAG alpha"),
            )
        ]
        interpolate = gr.Checkbox(
            label="Smoother motion: interpolate to 32 fps (twice the frames, same duration)", value=False,
            elem_id="interpolate",
        )  # fmt: skip
    return [last_image, *nag, interpolate]


def _slider(name: str, step: float, label: str, visible: bool = True) -> gr.Slider:
    """A control's slider over its range; 0 (the left end) = unset, the mode's default."""
    c = CONTROLS[name]
    return gr.Slider(0, c.high, value=0, step=step, label=f"{label} (0 = default)", info=c.help, elem_id=name,
                     visible=visible)  # fmt: skip


def _outputs() -> tuple[list[gr.components.Component], ...]:
    """The status line and the live preview; video, thumbnail, final prompt, seed used (the API
    outputs, in API order); the result's actions (New seed, Use last frame, next prompt, Extend)."""
    status = gr.Markdown("", elem_id="status")  # the page's progress line (see session.Session.follow)
    preview = gr.Image(
        label="Live preview (the denoiser's current estimate, low resolution)", type="filepath",
        interactive=False, visible=False, elem_id="preview", height=360,
    )  # fmt: skip
    video = gr.Video(label="Video", elem_id="output-video", interactive=False, autoplay=True, loop=True)
    with gr.Row():
        new_seed = gr.Button("New seed", size="sm", elem_id="new-seed")
        use_last = gr.Button("Use last frame", size="sm", elem_id="use-last-frame")
    with gr.Row(equal_height=True):
        next_prompt = gr.Textbox(
            label="Next prompt", lines=1, scale=4, elem_id="extend-prompt", placeholder="What happens next?"
        )
        extend = gr.Button("Extend", scale=1, elem_id="extend")
    with gr.Row():
        thumbnail = gr.Image(
            label="Thumbnail", type="filepath", interactive=False, elem_id="thumbnail", height=160
        )
        seed_used = gr.Number(
            label="Seed used", placeholder="after a run", precision=0, interactive=False, elem_id="seed-used"
        )
    final_prompt = gr.Textbox(label="Final prompt", interactive=False, lines=3, elem_id="final-prompt")
    batch_strip = batch.strip()  # a batch's videos side by side (web/batch.py)
    return (
        [status, preview],
        [video, thumbnail, final_prompt, seed_used],
        [new_seed, use_last, next_prompt, extend],
        batch_strip,
    )


def build_ui(jobs: JobService, engine: EngineInfo, settings: Settings) -> gr.Blocks:
    ttl_s = int(settings.output_ttl_h * 3600)
    with gr.Blocks(title=TITLE, delete_cache=(CACHE_SWEEP_S, ttl_s) if ttl_s > 0 else None) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        text, classes = banner_markdown(engine, jobs.model_state())
        banner = gr.Markdown(text, elem_id="banner", elem_classes=classes)
        # At each page load, and every LOAD_POLL_S while the model loads: its progress, then what runs
        # (on an API node: what the workers run now)
        timer, now = gr.Timer(LOAD_POLL_S, active=False), lambda: _banner_now(jobs)
        for event in (demo.load, timer.tick):
            event(now, None, [banner, timer], api_visibility="private", queue=False, show_progress="hidden")
        if oauth_enabled():
            gr.LoginButton()  # the logged-in Hugging Face user owns their history
        token, view, job_box = panels.identity()
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                inputs = _inputs(engine)
                num_videos = gr.Slider(
                    1, NUM_VIDEOS.high, value=1, step=1, label="Videos (a batch: seed, seed + 1, ...)",
                    elem_id="num-videos",
                )  # fmt: skip
                loras = lora_panel.build()  # LoRA rows: extra inputs of the page's own events
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
                code_btn, codes = panels.code_panel()
            with gr.Column(scale=1):
                message = gr.Markdown("", elem_id="job-message")
                (status, preview), outputs, (new_seed, use_last, next_prompt, extend), strip = _outputs()
        memory = panels.Memory(
            token, view, job_box, message, *panels.history_panel(), gr.State(0), gr.State([]), code_btn, codes
        )  # fmt: skip
        page, session = Page(jobs, settings, engine.fast_available, settings.model), Session(jobs)
        shown = [status, preview, *outputs, message]  # what the follower of the page's job updates
        strip_view = batch.BatchStrip(page.history)
        follow_history = panels.follower(session, page, memory, shown)

        def then_follow(event):  # follow, refresh the history, then the batch strip
            return follow_history(event).then(
                strip_view.show, [token, view], list(strip), api_visibility="private"
            )

        strip_view.wire(*strip, token, view, job_box, message, then_follow)
        # each page run takes the form (and the batch size), then the LoRA rows (web/lora_panel.py)
        picked, n = loras.widgets, len(inputs) + 1
        check, with_loras = lora_panel.check_with_loras(session.check, n), lora_panel.with_loras
        runs = [
            (generate_btn, with_loras(session.submit, n), [*inputs, num_videos, *picked], check),
            (new_seed, with_loras(session.new_seed, n), [*inputs, num_videos, *picked], check),
            (extend, with_loras(session.extend_shown, n - 2), [next_prompt, *inputs[2:], *picked], None),
        ]  # (extend: the shown result + the next prompt)
        panels.wire_runs(session, page, memory, runs, then_follow)
        use_last.click(session.use_last_frame, [token, view], inputs[0], api_visibility="private")
        panels.wire(page, memory, inputs, shown, cancel_btn, then_follow, loras=picked)
        panels.wire_load(demo, page, memory, then_follow)
        lora_panel.wire(lora_panel.LoraPanel(jobs), loras, memory, demo)
        # Handlers only follow their job; the worker runs one at a time, so they need not queue here.
        run = dict(concurrency_id="generation", concurrency_limit=settings.queue_max_size + 1)
        # The public API: plain outputs, on triggers nobody clicks (the page uses the events above).
        api = dict(api_visibility="public", **run)
        generate = make_generate(jobs)
        api_generate, api_extend = gr.Button(visible=False), gr.Button(visible=False)
        api_generate.click(generate, inputs, outputs, api_name="generate", validator=check_inputs, **api)
        api_extend.click(make_extend(jobs), [outputs[0], *inputs[1:]], outputs, api_name="extend",
                         validator=check_extend_inputs, **api)  # fmt: skip
        # /generate's parameters, then the list of LoRAs (a separate endpoint: /generate keeps its parameters)
        api_loras, api_with_loras = gr.JSON(visible=False, label="LoRAs"), gr.Button(visible=False)
        check_loras = lora_panel.check_api_inputs(check_inputs)
        api_with_loras.click(make_generate_with_loras(jobs), [*inputs, api_loras], outputs,
                             api_name="generate_with_loras", validator=check_loras, **api)  # fmt: skip
        rows = load_examples()
        if rows:
            image, prompt, _, seed, length = inputs[:5]
            gr.Examples(
                rows, [image, prompt, seed, length], outputs, fn=example_runner(generate),
                label="Examples (click to load)",
                # Cached tiny-model noise would outlive a switch to real weights: cache real runs only.
                cache_examples=not engine.is_tiny, cache_mode="lazy", api_visibility="private",
            )  # fmt: skip
    return demo
