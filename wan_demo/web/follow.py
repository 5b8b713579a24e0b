"""Follow a queued job from a Gradio handler: show its progress and each new live preview.

The job runs in the worker (maybe another process); the handler reads the job store every heartbeat.
The API handlers are generators, so Gradio's Cancel stops them at their next yield; `Follow.close()`
then cancels the job. The page's follower (web/session.py) drives the same steps from async code with
`cancel_on_close=False`: a page's job outlives its tab. Previews are copied out of storage first:
Gradio caches what a handler returns by content, and the worker removes older previews (and all at
the end) while the job runs.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from wan_demo.core.request import Progress
from wan_demo.jobs.common import TERMINAL, Job, Status, StoreUnavailable
from wan_demo.jobs.loading import READY
from wan_demo.jobs.service import JobService

HEARTBEAT_S = 0.5  # longest wait between yields: how fast a Cancel click takes effect
NO_WORKER = " - no worker is running yet"


class Follow:
    """Iterate while a job runs: every heartbeat yields the path of a new live preview (a private
    copy that Gradio may cache) or None. `job` is the latest record and `message` its progress in
    words (also sent to gr.Progress); `close()` cancels the job if it has not finished (Gradio closed
    the handler; unless `cancel_on_close` is False) and removes the copies. One heartbeat is `step()`
    then, after the wait, `refresh()`."""

    def __init__(self, jobs: JobService, job: Job, progress: gr.Progress, cancel_on_close: bool = True):
        self.jobs, self.job, self.progress = jobs, job, progress
        self.cancel_on_close = cancel_on_close
        self._folder: Path | None = None
        self._seen: str | None = None  # the location of the preview shown last
        self.message = ""

    def __iter__(self) -> Iterator[str | None]:
        yield None
        while self.job.status not in TERMINAL:
            yield self.step()
            time.sleep(HEARTBEAT_S)
            self.job = self.refresh() or self.job

    def step(self) -> str | None:
        """Show the progress; the path of a new live preview, or None."""
        try:
            report = live_progress(self.jobs, self.job)
            note = waiting_note(self.jobs) if report.stage == "queued" else ""
        except StoreUnavailable:
            report, note = self.job.progress_report, ""
        self.message = _show_progress(self.progress, report, self.message, note)
        return self._new_preview()

    def refresh(self) -> Job | None:
        """The job as the store has it now: None once it is gone (deleted), the last record while the
        database restarts (poll on)."""
        try:
            return self.jobs.get(self.job.request_id, self.job.owner)
        except StoreUnavailable:
            return self.job

    def _new_preview(self) -> str | None:
        """Each preview is a new storage location (jobs/previews.py): a new one is fetched and copied."""
        location = self.job.preview_path
        if self.job.status != Status.PROCESSING or not location or location == self._seen:
            return None
        try:
            data = self.jobs.storage.read_bytes(location)
        except OSError:  # replaced and removed meanwhile: the next one comes
            return None
        self._seen = location
        self._folder = self._folder or Path(tempfile.mkdtemp(prefix="wan-demo-preview-"))
        copy = self._folder / "preview.webp"
        copy.write_bytes(data)
        return str(copy)

    def close(self) -> None:
        if self.cancel_on_close and self.job.status not in TERMINAL:  # Gradio closed us: stop the job
            self.jobs.cancel(self.job.request_id, self.job.owner)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def waiting_note(jobs: JobService) -> str:
    """Why a queued job waits, when it is not just the jobs ahead: the model still loading (or
    failed), or no worker at all."""
    state = jobs.model_state()
    if state.state != READY:
        return f" - {state.message()}"
    return "" if jobs.workers_alive() else NO_WORKER


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
