"""The page's own generation buttons, for the visitor (private events; the public API is web/api.py).

Generate, New seed and Extend queue a job for the visitor's owner (web/owners.py: the signed-in
Hugging Face user or the browser's token) and return at once; the page then follows the job it shows
(`follow`, chained by web/panels.py): a status line and the live preview where the video will appear,
then the video in its place. The same follower picks up a `?job=` link or a history item, so a reload
mid-run shows the preview again; closing the tab never cancels a job (the Cancel button does).

Extend and Use last frame act on the result the page shows (PageView.job_id), looked up for the
visitor only: an unknown, deleted or someone else's id reads as "not found". New seed runs the same
settings with a fresh random seed; the CLIP image embedding of an unchanged picture is reused
(model/embed_cache.py).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from wan_demo.core.controls import NUM_VIDEOS, check_control
from wan_demo.core.request import InvalidRequest
from wan_demo.core.validate import validate
from wan_demo.jobs.common import TERMINAL, Job, Status
from wan_demo.jobs.service import JobService
from wan_demo.media.clip import last_frame
from wan_demo.web.follow import HEARTBEAT_S, Follow
from wan_demo.web.handlers import check_inputs, refusals, settings_request, submit
from wan_demo.web.history import NOT_FOUND, History, PageView, describe, owner_of
from wan_demo.web.owners import has_history

# status line, preview, video, thumbnail, final prompt, seed used, message: what `follow` updates
UiOutputs = tuple
SKIP7 = (gr.skip(),) * 7
NO_RESULT = "generate a video first: this continues the result shown"
NOT_YOURS = NOT_FOUND.replace("**", "")  # a toast shows no Markdown
RELOAD = "This page has no browser identity yet: reload it, then try again."


def at_rest() -> tuple[str, dict, dict]:
    """No status, preview hidden, video shown: the page between runs."""
    return "", gr.update(visible=False, value=None), gr.update(visible=True)


class Session:
    def __init__(self, jobs: JobService):
        self.jobs, self.history = jobs, History(jobs)

    @staticmethod
    def owner(token: Any, profile: Any) -> str:
        """The visitor's owner; a page without an identity yet (no token) is asked to reload."""
        owner = owner_of(token, profile)
        if not has_history(owner):
            raise gr.Error(RELOAD, title="Reload the page")
        return owner

    @staticmethod
    def check(token: Any, view: Any, *values: Any) -> list[dict]:
        """The /generate validator's verdicts, with the two page-only inputs always valid, then the
        page's batch size (num_videos, the last input)."""
        *form, count = values
        try:
            check_control(NUM_VIDEOS.name, int(count or 1))
            counted = gr.validate(True, "")
        except InvalidRequest as e:
            counted = gr.validate(False, e.rule)
        return [gr.validate(True, ""), gr.validate(True, ""), *check_inputs(*form), counted]

    # -- Generate, New seed, Extend: queue for the visitor, then `follow` shows the job
    def submit(
        self, token: Any, view: PageView, image: str | None, prompt: str, extend: bool, seed: float | None,
        length: str, negative: str | None, steps: float | None, guidance: float | None, mode: str | None,
        prompt_2: str | None, last_image: str | None = None, nag_scale: float = 0, nag_tau: float = 0,
        nag_alpha: float = 0, interpolate: bool = False, num_videos: float = 1,
        profile: gr.OAuthProfile | None = None, loras: list | None = None,
    ) -> tuple[str, str]:  # fmt: skip
        """The form as a job of this visitor (a batch with num_videos > 1: the page shows the
        first, the batch strip all of them): (job id for the URL, message). `loras`: the LoRA
        rows (web/lora_panel.py passes them)."""
        values = (image, prompt, extend, seed, length, negative, steps, guidance, mode, prompt_2, last_image,
                  nag_scale, nag_tau, nag_alpha, interpolate)  # fmt: skip
        jobs = submit(self.jobs, values, self.owner(token, profile), num_videos, loras)
        view.job_id, view.batch_id = jobs[0].request_id, jobs[0].batch_id or ""
        return jobs[0].request_id, ""

    def new_seed(
        self, token: Any, view: PageView, image: str | None, prompt: str, extend: bool, seed: float | None,
        length: str, negative: str | None, steps: float | None, guidance: float | None, mode: str | None,
        prompt_2: str | None, last_image: str | None = None, nag_scale: float = 0, nag_tau: float = 0,
        nag_alpha: float = 0, interpolate: bool = False, num_videos: float = 1,
        profile: gr.OAuthProfile | None = None, loras: list | None = None,
    ) -> tuple[str, str]:  # fmt: skip
        """The same settings with a fresh random seed (for each video of a batch)."""
        values = (image, prompt, extend, -1, length, negative, steps, guidance, mode, prompt_2, last_image,
                  nag_scale, nag_tau, nag_alpha, interpolate, num_videos)  # fmt: skip
        return self.submit(token, view, *values, profile=profile, loras=loras)

    def extend_shown(
        self, token: Any, view: PageView, prompt: str, extend: bool, seed: float | None, length: str,
        negative: str | None, steps: float | None, guidance: float | None, mode: str | None,
        prompt_2: str | None, last_image: str | None = None, nag_scale: float = 0, nag_tau: float = 0,
        nag_alpha: float = 0, interpolate: bool = False, profile: gr.OAuthProfile | None = None,
        loras: list | None = None,
    ) -> tuple[str, str]:  # fmt: skip
        """The result shown, continued with the "Next prompt" and the form's other settings."""
        owner = self.owner(token, profile)
        with refusals(), tempfile.TemporaryDirectory(prefix="wan-demo-parent-") as folder:
            shown = self.result_shown(view, owner, "video")
            parent = self.jobs.parent(shown.request_id, owner, Path(folder))  # copied here from a bucket
            values = (prompt, extend, seed, length, negative, steps, guidance, mode, prompt_2, last_image,
                      nag_scale, nag_tau, nag_alpha, interpolate)  # fmt: skip
            request = settings_request(last_frame(Path(parent.path)), *values, parent=parent, loras=loras)
            job = self.jobs.submit(validate(request), owner, "ui")
        view.job_id = job.request_id
        return job.request_id, ""

    def use_last_frame(
        self, token: Any, view: PageView, profile: gr.OAuthProfile | None = None
    ) -> Iterator[str]:
        """The last frame of the result shown becomes the input image (lossless PNG)."""
        folder = Path(tempfile.mkdtemp(prefix="wan-demo-frame-"))
        try:
            with refusals():
                owner = self.owner(token, profile)
                shown = self.result_shown(view, owner, "image")
                frame = last_frame(Path(self.jobs.parent(shown.request_id, owner, folder).path))
            frame.save(folder / "last_frame.png")
            yield str(folder / "last_frame.png")  # Gradio copies it into its cache before resuming us
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def result_shown(self, view: PageView, owner: str, field: str) -> Job:
        """The visitor's own job the page shows; one "not found" for unknown, deleted and foreign."""
        if not view.job_id:
            raise InvalidRequest(field, NO_RESULT)
        job = self.history.find(view.job_id, owner)
        if job is None:
            raise gr.Error(NOT_YOURS, title="Not found")
        return job

    # -- following the job the page shows
    async def follow(
        self, token: Any, view: PageView, progress: gr.Progress = gr.Progress(),  # noqa: B008
        profile: gr.OAuthProfile | None = None,
    ) -> AsyncIterator[UiOutputs]:  # fmt: skip
        """The page's job: status line and live preview while it runs, then its result or what went
        wrong. Stops quietly once the page shows another job (or none). Async: a waiting follower
        holds no worker thread; store reads run in a thread."""
        job_id, owner = view.job_id, owner_of(token, profile)
        job = await asyncio.to_thread(self.history.find, job_id, owner) if job_id else None
        if job is None or job.status in TERMINAL:
            yield self.shown(job) if job_id else SKIP7
            return
        tracker, said = Follow(self.jobs, job, progress, cancel_on_close=False), None
        skip = gr.skip()
        yield "", gr.update(visible=True, value=None), gr.update(visible=False), None, "", None, skip
        try:
            while job is not None and job.status not in TERMINAL and view.job_id == job_id:
                preview = await asyncio.to_thread(tracker.step)
                status = f"**Progress:** {tracker.message}" if tracker.message not in ("", said) else skip
                said = tracker.message or said
                yield status, gr.update(value=preview) if preview else skip, *(skip,) * 5
                await asyncio.sleep(HEARTBEAT_S)
                job = await asyncio.to_thread(tracker.refresh)  # None: deleted meanwhile
                tracker.job = job or tracker.job
        finally:
            tracker.close()  # removes the preview copies; the job runs on
        if view.job_id == job_id:
            yield self.shown(job)

    def shown(self, job: Job | None) -> UiOutputs:
        """The page at rest with a finished job (or NOT_FOUND for one that is gone)."""
        if job is None:
            return *at_rest(), None, "", None, NOT_FOUND
        video = thumbnail = None
        if job.status == Status.SUCCESS:
            try:
                video, thumbnail = self.jobs.local_files(job)  # a bucket's files copied for Gradio
            except (OSError, ValueError):
                pass
        status, preview, _ = at_rest()
        video_update = gr.update(visible=True, value=video)
        return status, preview, video_update, thumbnail, job.final_prompt or "", job.seed_used, describe(job)
