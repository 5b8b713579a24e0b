"""Event handlers of the page (private events; `/generate` for the API lives in web/handlers.py).

A page's job lives in the job store, not in the tab: Generate submits and the page then follows the
job by polling; the URL carries `?job=<id>`, so a reload or a later visit follows or shows it again.
Closing the tab never cancels a job; the Cancel button does. Followers are async and poll the store
from a thread, so a waiting follower holds no worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr

from wan_demo.core.settings import Settings
from wan_demo.jobs.common import TERMINAL, Job, Status, StoreUnavailable
from wan_demo.jobs.service import JobService
from wan_demo.media.image import load_stored
from wan_demo.web import code_snippets, restore
from wan_demo.web.follow import HEARTBEAT_S, live_progress
from wan_demo.web.handlers import check_inputs, submit
from wan_demo.web.history import NOT_FOUND, History, PageView, describe, owner_of
from wan_demo.web.owners import has_history, new_token, valid_token

SKIP5 = (gr.skip(),) * 5  # video, thumbnail, final prompt, seed used, message
RELOAD = "This page has no browser identity yet: reload it, then try again."
PICK_FIRST = "Open a result first: click one in the history."


class Page:
    def __init__(self, jobs: JobService, settings: Settings, fast_available: bool, model: str):
        self.jobs, self.settings, self.history = jobs, settings, History(jobs)
        self.fast_available, self.model = fast_available, model

    # -- page load: identity, ?job=, history
    def load(self, token: Any, view: PageView, request: gr.Request, profile: gr.OAuthProfile | None):
        """token (new when absent), the job to show (from ?job=), message, history page 0."""
        token = token if valid_token(token) else new_token()
        owner = owner_of(token, profile)
        view.job_id, message = "", ""
        wanted = request.query_params.get("job") if request is not None else None
        if wanted is not None:
            job = self.history.find(wanted, owner)
            view.job_id, message = (job.request_id, "") if job else ("", NOT_FOUND)
        return token, view.job_id, message, *self.history.page(owner, 0)

    # -- Generate / Cancel
    def submit(
        self, token: Any, view: PageView, image: str | None, prompt: str, extend: bool, seed: float | None,
        length: str, negative: str | None, steps: float | None, guidance: float | None, mode: str | None,
        profile: gr.OAuthProfile | None = None,
    ):  # fmt: skip
        """Queue the form for this visitor; the page then follows the job (web/ui.py chains it)."""
        owner = owner_of(token, profile)
        if not has_history(owner):
            raise gr.Error(RELOAD, title="Reload the page")
        values = (image, prompt, extend, seed, length, negative, steps, guidance, mode)
        job = submit(self.jobs, values, owner)
        view.job_id = job.request_id
        return job.request_id, ""

    @staticmethod
    def check(token: Any, view: Any, *values: Any) -> list[dict]:
        """The /generate validator's verdicts, with the two page-only inputs always valid."""
        return [gr.validate(True, ""), gr.validate(True, ""), *check_inputs(*values)[: len(values)]]

    def cancel(self, token: Any, view: PageView, profile: gr.OAuthProfile | None = None) -> str:
        job = self.history.find(view.job_id, owner_of(token, profile))
        if job is None or job.status in TERMINAL:
            return gr.skip()
        self.jobs.cancel(job.request_id, job.owner)
        return "Cancelling…"

    # -- following the page's job
    async def follow(
        self, token: Any, view: PageView, progress: gr.Progress = gr.Progress(),  # noqa: B008
        profile: gr.OAuthProfile | None = None,
    ) -> AsyncIterator[tuple]:  # fmt: skip
        """Show the page's job: its progress while it runs, then its result or what went wrong.
        Stops quietly once the page shows another job (or none)."""
        job_id, owner = view.job_id, owner_of(token, profile)
        job = await asyncio.to_thread(self.history.find, job_id, owner) if job_id else None
        if job is None:
            yield SKIP5
            return
        shown = ""
        while job is not None and job.status not in TERMINAL and view.job_id == job_id:
            try:
                report = await asyncio.to_thread(live_progress, self.jobs, job)
            except StoreUnavailable:
                report = job.progress_report
            if (message := report.message()) != shown:
                shown = message
                if report.stage == "denoise":
                    progress((report.step, report.total_steps), desc=message, unit="steps")
                else:
                    progress(report.fraction if report.stage != "queued" else 0.0, desc=message)
            yield SKIP5
            await asyncio.sleep(HEARTBEAT_S)
            try:
                job = await asyncio.to_thread(self.history.find, job_id, owner)
            except StoreUnavailable:  # the database restarts: keep the last state and poll on
                pass
        if view.job_id == job_id:
            yield self.shown(job)

    # -- history
    def history_at(self, token: Any, page: Any, profile: gr.OAuthProfile | None = None):
        """gallery items, page label, ids, page: the page shown now (refreshed)."""
        return self.history.page(owner_of(token, profile), int(page or 0))

    def history_newer(self, token: Any, page: Any, profile: gr.OAuthProfile | None = None):
        return self.history.page(owner_of(token, profile), int(page or 0) - 1)

    def history_older(self, token: Any, page: Any, profile: gr.OAuthProfile | None = None):
        return self.history.page(owner_of(token, profile), int(page or 0) + 1)

    def open_item(self, token: Any, view: PageView, ids: list[str], evt: gr.SelectData,
                  profile: gr.OAuthProfile | None = None):  # fmt: skip
        index = evt.index if isinstance(evt.index, int) else -1
        job = self.history.find(ids[index], owner_of(token, profile)) if 0 <= index < len(ids) else None
        view.job_id = job.request_id if job else ""
        return view.job_id, "" if job else NOT_FOUND

    def delete(self, token: Any, view: PageView, profile: gr.OAuthProfile | None = None):
        """Delete the page's result (row and files); clears the outputs and the URL."""
        if not self.history.delete(view.job_id, owner_of(token, profile)):
            return gr.skip(), *(gr.skip(),) * 4, PICK_FIRST
        view.job_id = ""
        return "", None, None, "", None, "Deleted: the result and its files are gone."

    # -- restore settings and copy as code
    def restore_job(self, token: Any, view: PageView, profile: gr.OAuthProfile | None = None):
        """Form values (image included while its stored input exists) from the page's result."""
        job = self.history.find(view.job_id, owner_of(token, profile))
        if job is None:
            return *(gr.skip(),) * 10, PICK_FIRST
        restored = restore.from_job(job, self.jobs.storage.read_bytes)
        return (
            self.stored_input(job),
            *restored.form(self.fast_available),
            f"Settings restored: {restored.summary()}.",
        )

    def restore_file(self, path: str | None):
        """Form values (all but the image) from an uploaded MP4 this app made; the drop zone is
        emptied again for the next file."""
        if not path:
            return *(gr.skip(),) * 10, gr.skip()
        try:
            restored = restore.from_file(path, self.settings.max_file_size_mb * 2**20)
        except restore.NoSettings as e:
            return *(gr.skip(),) * 9, f"**{str(e).capitalize()}.**", None
        name = Path(path).name
        return (
            *restored.form(self.fast_available),
            f"Settings restored from {name}: {restored.summary()}.",
            None,
        )

    def code(
        self, image: str | None, prompt: str, extend: bool, seed: float | None, length: str,
        negative: str | None, steps: float | None, guidance: float | None, mode: str | None,
        request: gr.Request = None,
    ) -> tuple[str, str, str]:  # fmt: skip
        """The three snippets for the form as it is now."""
        form = code_snippets.FormValues.from_widgets(
            prompt, extend, seed, length, negative, steps, guidance, mode
        )
        headers = getattr(request, "headers", None) or {}
        scheme = headers.get("x-forwarded-proto") or getattr(getattr(request, "url", None), "scheme", None)
        url = code_snippets.base_url(self.settings.public_url, headers.get("host"), scheme)
        return code_snippets.snippets(form, url, code_snippets.image_name(image), self.model)

    def shown(self, job: Job | None) -> tuple:
        """video, thumbnail, final prompt, seed used, message for a finished (or vanished) job."""
        if job is None:
            return None, None, "", None, NOT_FOUND
        if job.status == Status.SUCCESS:
            try:
                video, thumbnail = self.jobs.local_files(job)  # a bucket's files copied for Gradio
            except (OSError, ValueError):
                video = thumbnail = None
            return video, thumbnail, job.final_prompt or "", job.seed_used, describe(job)
        return None, None, job.final_prompt or "", job.seed_used, describe(job)

    def stored_input(self, job: Job) -> Any:
        """The job's input picture while the store still keeps it (outputs TTL), else unchanged."""
        try:
            return load_stored(self.jobs.storage.read_bytes(job.input_path))
        except (OSError, ValueError):
            return gr.skip()
