"""Gradio event handlers: widget values -> GenerationRequest -> the one Worker -> widget values.

No model logic here. The handler is a generator so Gradio's Cancel can stop it: it submits to the
shared Worker, yields while the task runs, and cancels the task in `finally` (a plain handler
would keep running after Cancel and the next job would start beside it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr

from wan_demo.core.request import GenerationRequest, InvalidRequest, Progress
from wan_demo.core.settings import Settings
from wan_demo.core.validate import validate
from wan_demo.jobs.worker import CANCELLED, SUCCESS, QueueFull, Worker
from wan_demo.media.image import decode_image
from wan_demo.media.video import remove_old_outputs

HEARTBEAT_S = 0.5  # longest wait between yields: how fast a Cancel click takes effect while queued
AUTO = "auto"  # speed-mode choice meaning "the server's default"

# The order of the /generate parameters; the validator maps InvalidRequest.field onto these.
INPUT_FIELDS = (
    "image", "prompt", "prompt_extend", "seed", "video_length",
    "negative_prompt", "steps", "guidance", "speed_mode",
)  # fmt: skip
_FIELD_ALIASES = {"video_length_s": "video_length"}

Outputs = tuple[str | None, str | None, str, int | None]  # video, thumbnail, final prompt, seed


def to_request(
    image: str | None,
    prompt: str,
    prompt_extend: bool,
    seed: float | None,
    video_length: str,
    negative_prompt: str | None,
    steps: float | None,
    guidance: float | None,
    speed_mode: str | None,
) -> GenerationRequest:
    """Widget values -> request. 0 steps / 0 guidance / "auto" mean the speed mode's defaults."""
    if not image:
        raise InvalidRequest("image", "is required: upload a JPEG, PNG or WEBP picture")
    data = Path(image).read_bytes()  # a file Gradio stored for this upload, never a user-given path
    return GenerationRequest(
        image=decode_image(data),
        prompt=prompt if prompt is not None else "",
        video_length_s=video_length,  # type: ignore[arg-type]  # "5"/"10": validate() converts
        seed=-1 if seed is None else seed,  # type: ignore[arg-type]  # float from gr.Number
        prompt_extend=bool(prompt_extend),
        negative_prompt=negative_prompt or None,
        steps=int(steps) if steps else None,
        guidance=float(guidance) if guidance else None,
        speed_mode=None if speed_mode in (None, "", AUTO) else speed_mode,
    )


def check_inputs(*values) -> list[dict]:
    """Gradio validator: one gr.validate per input, so the message appears on the bad field."""
    verdicts = [gr.validate(True, "") for _ in INPUT_FIELDS]
    try:
        validate(to_request(*values))
    except InvalidRequest as e:
        name = _FIELD_ALIASES.get(e.field, e.field)
        if name in INPUT_FIELDS:  # the field label is shown beside the message: the rule suffices
            verdicts[INPUT_FIELDS.index(name)] = gr.validate(False, e.rule)
        else:
            verdicts[0] = gr.validate(False, str(e))
    return verdicts


def make_generate(worker: Worker, settings: Settings) -> Callable[..., Iterator[Outputs]]:
    """The /generate handler bound to the shared worker (its name is the API and MCP tool name)."""

    def generate(
        image: str | None,
        prompt: str,
        prompt_extend: bool = False,
        seed: float = -1,
        video_length: str = "5",
        negative_prompt: str | None = None,
        steps: float = 0,
        guidance: float = 0,
        speed_mode: str = AUTO,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  # Gradio injects it by default value
    ) -> Iterator[Outputs]:
        """Animate a still image into a short video with Wan2.1 image-to-video (14B, 480P).

        Args:
            image: the first frame: a JPEG, PNG or WEBP picture (sides >= 16 px, aspect ratio <= 4:1).
            prompt: what should happen in the video, in plain words (1-2000 characters).
            prompt_extend: rewrite the prompt into a richer description before generating.
            seed: -1 for a random seed, or 0..2147483647 to repeat a result.
            video_length: clip length in seconds: "5" (81 frames) or "10" (161 frames) at 16 fps.
            negative_prompt: what to avoid; empty = the model's default list of artifacts.
            steps: denoising steps (1-100); 0 = the speed mode's default.
            guidance: classifier-free guidance scale (up to 20); 0 = the speed mode's default.
            speed_mode: "auto" (server default), "quality" (40 steps) or "fast" (distilled, 4 steps).

        Returns:
            The MP4 video, its first-frame thumbnail (JPEG), the final prompt used and the seed used.
        """
        try:
            request = to_request(
                image, prompt, prompt_extend, seed, video_length, negative_prompt, steps, guidance, speed_mode
            )
            remove_old_outputs(Path(settings.output_dir), settings.output_ttl_h)
            task = worker.submit(request)
        except InvalidRequest as e:
            raise gr.Error(str(e), title="Invalid input") from None
        except QueueFull as e:
            raise gr.Error(f"The queue is full: {e}.", title="Queue full") from None
        try:
            shown = ""
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            while not task.wait(HEARTBEAT_S):
                shown = _show_progress(progress, _live_progress(worker, task), shown)
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        finally:
            task.cancel()  # no-op when finished; stops the worker when Gradio closed us (Cancel)
        if task.status == SUCCESS and task.result is not None:
            r = task.result
            yield str(r.video_path), str(r.thumbnail_path), r.final_prompt, r.seed_used
        elif task.status == CANCELLED:
            raise gr.Error("The generation was cancelled.", title="Cancelled")
        elif isinstance(task.error, InvalidRequest):
            raise gr.Error(str(task.error), title="Invalid input")
        else:
            raise gr.Error("The generation failed on the server; see the server log.", title="Failed")

    return generate


def example_runner(generate: Callable[..., Iterator[Outputs]]) -> Callable[..., Iterator[Outputs]]:
    """gr.Examples fills image, prompt, seed and length; the rest take their defaults."""

    def run_example(
        image: str,
        prompt: str,
        seed: float,
        video_length: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> Iterator[Outputs]:
        yield from generate(image, prompt, False, seed, video_length, progress=progress)

    return run_example


def _live_progress(worker: Worker, task) -> Progress:
    """The task's own report, or its live place in the queue while it waits."""
    position = worker.position(task)
    if position:
        return Progress("queued", queue_position=position)
    return task.progress


def _show_progress(progress: gr.Progress, p: Progress, shown: str) -> str:
    message = p.message()
    if message != shown:
        if p.stage == "denoise":
            progress((p.step, p.total_steps), desc=message, unit="steps")
        else:
            progress(0.0 if p.stage == "queued" else p.fraction, desc=message)
    return message
