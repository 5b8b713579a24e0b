"""A visitor's own results: the history gallery (newest first, paged), opening one, deleting one.

Every lookup goes through the ownership rule (web/owners.py) and JobService.get(id, owner), so an
unknown, expired, deleted and someone else's id all read the same: NOT_FOUND.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from PIL import Image

from wan_demo.jobs.common import Job, Status
from wan_demo.jobs.service import JobService
from wan_demo.web.owners import has_history, job_id_from, may_open, owner_for

PAGE_SIZE = 8  # results per history page
CAPTION_PROMPT_CHARS = 60  # prompt shown under a thumbnail
PLACEHOLDER_SIZE = (160, 96)  # px; stands in for a thumbnail that does not exist (yet)
NOT_FOUND = (
    "**Not found.** There is no result at this link that you can open: it may have expired or been "
    "deleted, or it was made in another browser or account."
)
ICONS = {
    Status.QUEUED: "⏳", Status.PROCESSING: "▶️", Status.SUCCESS: "✅", Status.FAILED: "⚠️",
    Status.CANCELLED: "✖️",
}  # fmt: skip


class PageView:
    """Per browser tab (a gr.State, mutated in place): the job the page shows. A follower stops
    once it changes. Not a dataclass: Gradio would try to serialise the class into its config."""

    def __init__(self) -> None:
        self.job_id = ""
        self.batch_id = ""  # the batch the page submitted last (its strip shows every video)


def owner_of(token: Any, profile: Any) -> str | None:
    """The visitor's owner from the OAuth profile Gradio injects (or None) and the browser token."""
    return owner_for(getattr(profile, "username", None), token)


def length_s(job: Job) -> int:
    return int(job.params.get("video_length_s") or 5)


def caption(job: Job) -> str:
    prompt = " ".join(str(job.params.get("prompt", "")).split())
    if len(prompt) > CAPTION_PROMPT_CHARS:
        prompt = prompt[: CAPTION_PROMPT_CHARS - 1] + "…"
    seed = job.seed_used if job.seed_used is not None else job.params.get("seed", -1)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(job.created_at))
    return f"{ICONS.get(job.status, '')} {job.status} · {length_s(job)} s · seed {seed} · {when} · {prompt}"


def describe(job: Job) -> str:
    """The one-line message shown above a result the page opened."""
    text = f"{caption(job)}"
    if job.status == Status.FAILED:
        return f"**This generation failed:** {job.error_message or job.error_code}. {text}"
    if job.status == Status.CANCELLED:
        return f"**This generation was cancelled.** {text}"
    return text


class History:
    def __init__(self, jobs: JobService):
        self.jobs = jobs

    def find(self, job_id: Any, owner: str | None) -> Job | None:
        """The visitor's own job, or None (unknown, expired, deleted, malformed or not theirs)."""
        request_id = job_id_from(job_id)
        if request_id is None or not has_history(owner):
            return None
        job = self.jobs.get(request_id, owner)
        return job if job is not None and may_open(job.owner, owner) else None

    def page(self, owner: str | None, page: int) -> tuple[list, str, list[str], int]:
        """(gallery items, page label, request ids in gallery order, the page shown, clamped)."""
        if not has_history(owner):
            return [], "No history in this browser yet.", [], 0
        total = self.jobs.list(owner, limit=1)[1]
        pages = max(1, math.ceil(total / PAGE_SIZE))
        page = min(max(0, int(page or 0)), pages - 1)
        rows, _ = self.jobs.list(owner, limit=PAGE_SIZE, offset=page * PAGE_SIZE)
        items = [(self.picture(job), caption(job)) for job in rows]
        label = f"Page {page + 1} of {pages} · {total} result{'s' if total != 1 else ''}"
        return items, label, [job.request_id for job in rows], page

    def picture(self, job: Job) -> str | Image.Image:
        """The thumbnail while it exists (a bucket's is copied to the UI folder), else a grey
        stand-in (queued, running, failed, expired)."""
        if job.status == Status.SUCCESS and job.thumbnail_path:
            try:
                thumbnail = self.jobs.local_files(job)[1]
            except (OSError, ValueError):
                thumbnail = None
            if thumbnail and Path(thumbnail).is_file():
                return thumbnail
        return Image.new("RGB", PLACEHOLDER_SIZE, (96, 96, 96))

    def delete(self, job_id: Any, owner: str | None) -> bool:
        job = self.find(job_id, owner)
        return job is not None and self.jobs.delete(job.request_id, job.owner)
