"""The UI's own handlers (private events; the public API is web/api.py).

Generate, New seed and Extend show the live preview where the video will appear and put the video
in its place at the end; the page remembers the result it shows (the job id, in a gr.State) for
Extend and Use last frame. New seed runs the same settings with a fresh random seed; the CLIP image
embedding of an unchanged picture is reused (model/embed_cache.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr

from wan_demo.core.request import InvalidRequest
from wan_demo.core.validate import validate
from wan_demo.jobs.service import JobService
from wan_demo.media.clip import last_frame
from wan_demo.web.follow import Follow
from wan_demo.web.handlers import UI_OWNER, outputs_of, refusals, settings_request, submit

# status line, preview, video, thumbnail, final prompt, seed used, the shown result's job id
UiOutputs = tuple
NO_RESULT = "generate a video first: this continues the result shown"


def at_rest() -> tuple[str, dict, dict]:
    """No status, preview hidden, video shown: the page between runs (also what Cancel restores)."""
    return "", gr.update(visible=False, value=None), gr.update(visible=True)


def ui_stream(follow: Follow) -> Iterator[UiOutputs]:
    """The page's side of a run. Progress goes to a status line above the preview, not to Gradio's
    progress overlay: that would cover the preview, and every output update hides it again."""
    skip, said = gr.skip(), None
    yield "", gr.update(visible=True, value=None), gr.update(visible=False), skip, skip, skip, skip
    try:
        for preview in follow:  # unchanged outputs are skipped: nothing to send, nothing to redraw
            status = f"**Progress:** {follow.message}" if follow.message and follow.message != said else skip
            said = follow.message or said
            yield status, gr.update(value=preview) if preview else skip, skip, skip, skip, skip, skip
    finally:
        follow.close()
    try:
        video, thumbnail, final_prompt, seed_used = outputs_of(follow.jobs, follow.job)
    except gr.Error:
        yield *at_rest(), skip, skip, skip, skip
        raise
    yield (
        "", gr.update(visible=False, value=None), gr.update(visible=True, value=video), thumbnail,
        final_prompt, seed_used, follow.job.request_id,
    )  # fmt: skip


def make_run(jobs: JobService, new_seed: bool = False) -> Callable[..., Iterator[UiOutputs]]:
    """Generate (or, with `new_seed`, the same settings with a random seed) from the input widgets."""

    def run(image, prompt, prompt_extend, seed, video_length, negative_prompt, steps, guidance, speed_mode,
            prompt_2, progress: gr.Progress = gr.Progress()):  # noqa: B008  # fmt: skip
        seed = -1 if new_seed else seed
        values = (image, prompt, prompt_extend, seed, video_length, negative_prompt, steps, guidance)
        job = submit(jobs, (*values, speed_mode, prompt_2))
        yield from ui_stream(Follow(jobs, job, progress))

    return run


def make_extend_result(jobs: JobService) -> Callable[..., Iterator[UiOutputs]]:
    """Extend: the result shown, continued with the "Next prompt" and the input widgets' settings."""

    def extend_result(last_job, prompt, prompt_extend, seed, video_length, negative_prompt, steps, guidance,
                      speed_mode, prompt_2, progress: gr.Progress = gr.Progress()):  # noqa: B008  # fmt: skip
        with refusals(), tempfile.TemporaryDirectory(prefix="wan-demo-parent-") as folder:
            if not last_job:
                raise InvalidRequest("video", NO_RESULT)
            parent = jobs.parent(last_job, UI_OWNER, Path(folder))  # copied here from a bucket
            values = (prompt, prompt_extend, seed, video_length, negative_prompt, steps, guidance, speed_mode)
            request = settings_request(last_frame(Path(parent.path)), *values, prompt_2, parent=parent)
            job = jobs.submit(validate(request), UI_OWNER, "ui")
        yield from ui_stream(Follow(jobs, job, progress))

    return extend_result


def make_use_last_frame(jobs: JobService) -> Callable[[str | None], Iterator[str]]:
    """Use last frame: the last frame of the result shown becomes the input image (lossless PNG)."""

    def use_last_frame(last_job: str | None) -> Iterator[str]:
        folder = Path(tempfile.mkdtemp(prefix="wan-demo-frame-"))
        try:
            with refusals():
                if not last_job:
                    raise InvalidRequest("image", NO_RESULT)
                frame = last_frame(Path(jobs.parent(last_job, UI_OWNER, folder).path))
            frame.save(folder / "last_frame.png")
            yield str(folder / "last_frame.png")  # Gradio copies it into its cache before resuming us
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return use_last_frame
