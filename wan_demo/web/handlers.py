"""Gradio event handlers: widget values -> ValidRequest -> the job queue -> widget values.

No model logic here. The handler is a generator so Gradio's Cancel can stop it: it submits the job,
yields while it runs (showing the store's progress), and cancels the job in `finally` when Gradio
closed it (Cancel, or the page went away).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr

from wan_demo.core.request import GenerationRequest, InvalidRequest, Progress
from wan_demo.core.validate import check_fields, validate
from wan_demo.jobs.common import TERMINAL, Job, QueueFull, Status, StoreUnavailable, TooManyActive
from wan_demo.jobs.service import JobService, SourceImage
from wan_demo.media.image import decode_image, probe_image

HEARTBEAT_S = 0.5  # longest wait between yields: how fast a Cancel click takes effect
AUTO = "auto"  # speed-mode choice meaning "the server's default"
UI_OWNER = "ui"  # all UI and Gradio API jobs share one owner (per-user history: issue 13)

# The order of the /generate parameters; the validator maps InvalidRequest.field onto these.
INPUT_FIELDS = (
    "image", "prompt", "prompt_extend", "seed", "video_length",
    "negative_prompt", "steps", "guidance", "speed_mode",
)  # fmt: skip

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
    decode: bool = True,
) -> tuple[GenerationRequest, bytes]:
    """Widget values -> an unchecked request and the upload's bytes. 0 steps / 0 guidance /
    "auto" mean the speed mode's defaults; `decode=False` leaves the image to the caller."""
    if not image:
        raise InvalidRequest("image", "is required: upload a JPEG, PNG or WEBP picture")
    data = Path(image).read_bytes()  # a file Gradio stored for this upload, never a user-given path
    request = GenerationRequest(
        image=decode_image(data) if decode else None,
        prompt=prompt if prompt is not None else "",
        video_length_s=video_length,
        seed=-1 if seed is None else seed,
        prompt_extend=bool(prompt_extend),
        negative_prompt=negative_prompt or None,
        steps=int(steps) if steps else None,
        guidance=float(guidance) if guidance else None,
        speed_mode=None if speed_mode in (None, "", AUTO) else speed_mode,
    )
    return request, data


def check_inputs(*values) -> list[dict]:
    """Gradio validator, before queueing: the same field rules as validate(), and the image's
    format and size from its header (the handler decodes it once). One verdict per input."""
    verdicts = [gr.validate(True, "") for _ in INPUT_FIELDS]
    try:
        request, data = to_request(*values, decode=False)
        probe_image(data)
        check_fields(request)
    except InvalidRequest as e:
        if e.field in INPUT_FIELDS:  # the field label is shown beside the message: the rule suffices
            verdicts[INPUT_FIELDS.index(e.field)] = gr.validate(False, e.rule)
        else:
            verdicts[0] = gr.validate(False, str(e))
    return verdicts


def submit(jobs: JobService, values: tuple) -> Job:
    """Validate once and queue; errors become gr.Error with the rule."""
    try:
        request, data = to_request(*values)
        source = SourceImage(data, request.image.format)  # kept as uploaded, not re-encoded
        return jobs.submit(validate(request), UI_OWNER, "ui", image=source)
    except InvalidRequest as e:
        raise gr.Error(str(e), title="Invalid input") from None
    except (QueueFull, TooManyActive) as e:
        raise gr.Error(f"The queue is full: {e}.", title="Queue full") from None
    except StoreUnavailable:
        raise gr.Error("The job database is restarting; try again in a few seconds.", title="Busy") from None


def make_generate(jobs: JobService) -> Callable[..., Iterator[Outputs]]:
    """The /generate handler bound to the job service (its name is the API and MCP tool name)."""

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
        values = (image, prompt, prompt_extend, seed, video_length, negative_prompt, steps, guidance)
        job = submit(jobs, (*values, speed_mode))
        try:
            job = yield from follow(jobs, job, progress)
        finally:
            if job.status not in TERMINAL:  # Gradio closed us (Cancel, page gone): stop the job
                jobs.cancel(job.request_id, job.owner)
        yield outputs_of(jobs, job)

    return generate


def follow(jobs: JobService, job: Job, progress: gr.Progress) -> Iterator[tuple]:
    """Yield (nothing changed) every heartbeat while showing the job's progress; return it finished."""
    shown = ""
    yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
    while job.status not in TERMINAL:
        report = live_progress(jobs, job)
        note = "" if report.stage != "queued" or jobs.workers_alive() else " - no worker is running yet"
        shown = _show_progress(progress, report, shown, note)
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        time.sleep(HEARTBEAT_S)
        try:
            job = jobs.get(job.request_id, job.owner) or job
        except StoreUnavailable:  # the database restarts: keep showing the last state and poll on
            pass
    return job


def outputs_of(jobs: JobService, job: Job) -> Outputs:
    if job.status == Status.SUCCESS:
        video, thumbnail = jobs.local_files(job)  # a bucket's files are copied to the UI folder
        return video, thumbnail, job.final_prompt or "", job.seed_used
    if job.status == Status.CANCELLED:
        raise gr.Error("The generation was cancelled.", title="Cancelled")
    if job.error_code == "invalid_input":
        raise gr.Error(job.error_message or "invalid input", title="Invalid input")
    raise gr.Error("The generation failed on the server; see the server log.", title="Failed")


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


def live_progress(jobs: JobService, job: Job) -> Progress:
    """The job's own report, or its place in the queue and ETA while it waits."""
    try:
        if job.status == Status.QUEUED:
            return Progress("queued", queue_position=jobs.position(job), eta_s=jobs.eta_s(job))
    except StoreUnavailable:
        return Progress("queued")
    return job.progress_report


def _show_progress(progress: gr.Progress, p: Progress, shown: str, note: str = "") -> str:
    message = p.message() + note
    if message != shown:
        if p.stage == "denoise":
            progress((p.step, p.total_steps), desc=message, unit="steps")
        else:
            progress(0.0 if p.stage == "queued" else p.fraction, desc=message)
    return message
