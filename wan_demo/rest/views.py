"""The client's view of a job (RequestView): what GET answers and what a webhook POSTs.

Built without the HTTP request: outcome links start from `base` (Settings.public_url, else the
submitting request's scheme and host, kept with the webhook) so a deliverer renders the same JSON
as GET. A stored record that cannot be shown as stored still renders (see `view`).
"""

from __future__ import annotations

import logging
from dataclasses import fields, replace

from wan_demo.core.settings import Settings
from wan_demo.jobs.common import Job, Status
from wan_demo.jobs.service import JobService
from wan_demo.jobs.store.records import clean, clean_deep
from wan_demo.rest.schema import ErrorInfo, Outcome, RequestView, WebhookState

log = logging.getLogger(__name__)

FILE_PATH = "/api/v1/apikey/requests/{request_id}/{name}"  # the REST routes' mount + file routes
NO_WORKER_NOTICE = "no worker is running; the request waits in the queue until one starts"


class Views:
    def __init__(self, jobs: JobService, settings: Settings):
        self.jobs, self.settings = jobs, settings

    def view(self, job: Job, base: str) -> RequestView:
        """The client's view of a job. A stored record that cannot be shown as stored (text UTF-8
        cannot encode, broken JSON) still renders, with unreadable text as U+FFFD and error code
        "damaged_record": never a 500 for it or for the listing that holds it, never skipped."""
        damage = job.damage
        if damage is None:
            try:
                view = self._view(job, base)
                view.model_dump_json()  # raises on text that JSON over UTF-8 cannot carry
                return view
            except (ValueError, TypeError, UnicodeError) as e:
                damage = f"it cannot be rendered ({type(e).__name__})"
        log.warning("request %s: damaged record, shown with an error: %s", clean(job.request_id), damage)
        return self._damaged_view(job, base, damage)

    def body(self, job: Job) -> bytes:
        """A webhook's body: the view of the job as it was at the event, JSON as GET sends it."""
        return self.view(job, job.webhook.get("base", "")).model_dump_json().encode("utf-8")

    def _damaged_view(self, job: Job, base: str, damage: str) -> RequestView:
        message = f"this request's stored record is damaged: {damage}; unreadable text is shown as U+FFFD"
        if job.error_code:
            message += f" (its own error: {job.error_code}: {job.error_message})"
        error = ErrorInfo(code="damaged_record", message=clean(message))
        try:
            cleaned = replace(job, **{f.name: clean_deep(getattr(job, f.name)) for f in fields(job)})
            return self._view(cleaned, base).model_copy(update={"error": error})
        except (ValueError, TypeError, UnicodeError):  # e.g. a timestamp that is not a number
            return RequestView(
                request_id=clean(str(job.request_id)), org_id=clean(f"key_{job.owner}"),
                model=clean(str(job.model)), status=clean(str(job.status)), is_public=False, payload={},
                outcome=Outcome(), qworker_id=None, created_at=0, updated_at=0, queued_at=0, error=error,
            )  # fmt: skip

    def _view(self, job: Job, base: str) -> RequestView:
        outcome = Outcome()
        if job.status == Status.SUCCESS:
            outcome = Outcome(
                video_url=self.url(base, "video", job), thumbnail_image_url=self.url(base, "thumbnail", job)
            )
        notice = None
        if job.status == Status.QUEUED and not self.jobs.workers_alive():
            notice = NO_WORKER_NOTICE
        error = None
        if job.error_code:
            error = {"code": job.error_code, "message": job.error_message or job.error_code}
        return RequestView(
            request_id=job.request_id,
            org_id=f"key_{job.owner}",
            model=job.model,
            status=job.status,
            is_public=False,
            payload=job.payload,
            outcome=outcome,
            qworker_id=job.worker_id,
            created_at=int(job.created_at),
            updated_at=int(job.updated_at),
            queued_at=int(job.queued_at),
            started_at=_int(job.started_at),
            completed_at=_int(job.completed_at),
            queue_position=self.jobs.position(job),
            progress=job.progress,
            error=error,
            final_prompt=job.final_prompt,
            seed_used=job.seed_used,
            eta_s=self.jobs.eta_s(job),
            notice=notice,
            preview_url=self._preview_url(base, job),
            webhook=self._webhook(job),
            batch_id=job.batch_id,
        )

    def _webhook(self, job: Job) -> WebhookState | None:
        if not job.webhook.get("url"):
            return None
        state = self.jobs.webhook_state(job)
        return WebhookState(
            url=job.webhook["url"], events=list(job.webhook.get("events", [])),
            **{**state, "next_attempt_at": _int(state["next_attempt_at"])},
        )  # fmt: skip

    def _preview_url(self, base: str, job: Job) -> str | None:
        if job.status != Status.PROCESSING or not job.preview_path:
            return None
        return base + FILE_PATH.format(request_id=job.request_id, name="preview")

    def url(self, base: str, name: str, job: Job) -> str:
        """Through this API (the Bearer key again), or a presigned bucket link that expires."""
        location = job.video_path if name == "video" else job.thumbnail_path
        if self.settings.presign_ttl_s > 0 and self.jobs.storage.remote and location:
            return self.jobs.storage.url(location, self.settings.presign_ttl_s) or ""
        return base + FILE_PATH.format(request_id=job.request_id, name=name)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
