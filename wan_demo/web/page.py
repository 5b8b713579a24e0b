"""Event handlers of the page's memory (private events): identity and the `?job=` link at load,
Cancel, the history, delete, restore settings and copy as code. The generation buttons and the
follower of the page's job are in web/session.py; the public API in web/api.py.

A page's job lives in the job store, not in the tab: the URL carries `?job=<id>`, so a reload or a
later visit follows or shows it again. Every lookup is for the visitor's own owner (web/owners.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr

from wan_demo.core.settings import Settings
from wan_demo.jobs.common import TERMINAL, Job
from wan_demo.jobs.service import JobService
from wan_demo.media.image import load_stored
from wan_demo.web import code_snippets, restore
from wan_demo.web.history import NOT_FOUND, History, PageView, owner_of
from wan_demo.web.owners import new_token, valid_token
from wan_demo.web.session import at_rest

FORM_VALUES = 15  # what Restored.form() gives: the form after the image, then the final prompt
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

    # -- Cancel
    def cancel(self, token: Any, view: PageView, profile: gr.OAuthProfile | None = None) -> str:
        job = self.history.find(view.job_id, owner_of(token, profile))
        if job is None or job.status in TERMINAL:
            return gr.skip()
        self.jobs.cancel(job.request_id, job.owner)
        return "Cancelling…"

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
        """Delete the page's result (row and files); clears the outputs (session.follow's) and the URL."""
        if not self.history.delete(view.job_id, owner_of(token, profile)):
            return *(gr.skip(),) * 7, PICK_FIRST
        view.job_id = ""
        return "", *at_rest(), None, "", None, "Deleted: the result and its files are gone."

    # -- restore settings and copy as code
    def restore_job(self, token: Any, view: PageView, profile: gr.OAuthProfile | None = None):
        """Form values (image included while its stored input exists) from the page's result."""
        job = self.history.find(view.job_id, owner_of(token, profile))
        if job is None:
            return *(gr.skip(),) * (1 + FORM_VALUES), PICK_FIRST
        restored = restore.from_job(job, self.jobs.storage.read_bytes)
        if job.last_image_path:  # the end frame while the store keeps it
            restored = replace(restored, last_image=self.stored_input(job, job.last_image_path) or None)
        return (
            self.stored_input(job),
            *restored.form(self.fast_available),
            f"Settings restored: {restored.summary()}.",
        )

    def restore_file(self, path: str | None):
        """Form values (all but the image) from an uploaded MP4 this app made; the drop zone is
        emptied again for the next file."""
        if not path:
            return (gr.skip(),) * (FORM_VALUES + 2)
        try:
            restored = restore.from_file(path, self.settings.max_file_size_mb * 2**20)
        except restore.NoSettings as e:
            return *(gr.skip(),) * FORM_VALUES, f"**{str(e).capitalize()}.**", None
        name = Path(path).name
        return (
            *restored.form(self.fast_available),
            f"Settings restored from {name}: {restored.summary()}.",
            None,
        )

    def code(
        self, image: str | None, prompt: str, extend: bool, seed: float | None, length: str,
        negative: str | None, steps: float | None, guidance: float | None, mode: str | None,
        prompt_2: str | None, last_image: str | None = None, nag_scale: float = 0, nag_tau: float = 0,
        nag_alpha: float = 0, interpolate: bool = False, request: gr.Request = None,
        loras: list | None = None,
    ) -> tuple[str, str, str]:  # fmt: skip
        """The three snippets for the form as it is now (`loras`: the LoRA rows in use)."""
        form = code_snippets.FormValues.from_widgets(
            prompt, extend, seed, length, negative, steps, guidance, mode, prompt_2,
            code_snippets.image_name(last_image) if last_image else "", nag_scale, nag_tau, nag_alpha,
            interpolate,
        )  # fmt: skip
        form = replace(form, loras=tuple(loras or ()))
        headers = getattr(request, "headers", None) or {}
        scheme = headers.get("x-forwarded-proto") or getattr(getattr(request, "url", None), "scheme", None)
        url = code_snippets.base_url(self.settings.public_url, headers.get("host"), scheme)
        return code_snippets.snippets(form, url, code_snippets.image_name(image), self.model)

    def stored_input(self, job: Job, location: str | None = None) -> Any:
        """The job's input picture (or the one at `location`, its end frame) while the store still
        keeps it (outputs TTL), else unchanged."""
        try:
            return load_stored(self.jobs.storage.read_bytes(location or job.input_path))
        except (OSError, ValueError):
            return gr.skip() if location is None else None
