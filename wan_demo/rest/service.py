"""The REST layer's rules between HTTP and the job service: auth, admission, views, files.

Routes (rest/routes.py) stay thin: they call RestService and render what it returns. Bad input
arrives as InvalidRequest (core/validate.py, rest/inputs.py); refusals of our own are
ApiError(status, code, ...). Jobs are reached only through jobs.service.JobService.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from wan_demo.core.request import GenerationRequest, InvalidRequest, ParentClip
from wan_demo.core.settings import API_MODEL_ID, Settings
from wan_demo.core.validate import validate
from wan_demo.jobs.common import Job, ParentUnavailable, QueueFull, Status, TooManyActive
from wan_demo.jobs.records import clean, clean_deep
from wan_demo.jobs.service import JobService, SourceImage
from wan_demo.media.clip import last_frame
from wan_demo.rest.inputs import InputImage, load_input_image
from wan_demo.rest.keys import SETUP_HINT, KeyRing
from wan_demo.rest.schema import ErrorInfo, Outcome, RequestList, RequestView, SubmitBody

log = logging.getLogger(__name__)

RETRY_AFTER_S = 30  # hint on 429: roughly one generation on a fast GPU
CHUNK_BYTES = 1 << 20  # outputs from a bucket are streamed in 1 MiB pieces
NO_WORKER_NOTICE = "no worker is running; the request waits in the queue until one starts"
PARENT_FIELD = "payload.parent_request_id"
# ParentUnavailable.reason -> (HTTP status, error code)
PARENT_ERRORS = {
    "not_found": (404, "parent_not_found"),
    "not_success": (409, "parent_not_success"),
    "expired": (410, "parent_expired"),
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


class RestService:
    def __init__(self, jobs: JobService, settings: Settings, keys: KeyRing):
        self.jobs, self.settings, self.keys = jobs, settings, keys

    def caller(self, request: Request) -> str:
        if not self.keys.enabled:
            raise ApiError(503, "api_disabled", SETUP_HINT)
        owner = self.keys.owner_of(request.headers.get("authorization"))
        if owner is None:
            raise ApiError(
                401,
                "unauthorized",
                "missing or invalid API key; send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return owner

    def submit(self, body: SubmitBody, owner: str) -> Job:
        if body.model != API_MODEL_ID:
            raise InvalidRequest("model", f"{body.model[:80]!r} is not served here; use {API_MODEL_ID!r}")
        p = body.payload
        with tempfile.TemporaryDirectory(prefix="wan-demo-parent-") as folder:  # a parent from a bucket
            with _refusals():
                self.jobs.check_capacity(owner, per_owner=True)  # before the (possibly remote) image work
                image, parent = self._input(p, owner, Path(folder))
            picture = image.image if image is not None else last_frame(Path(parent.path))  # type: ignore[union-attr]
            raw = GenerationRequest(
                picture, p.prompt, p.video_length, p.seed, p.prompt_extend, prompt_2=p.prompt_2, parent=parent
            )
            with _payload_fields():
                valid = validate(raw)
            payload = dict(
                prompt=valid.prompt, video_length=valid.video_length_s, prompt_extend=valid.prompt_extend,
                seed=valid.seed, path_input_image=image.echo if image else None,
            )  # fmt: skip
            extra = dict(prompt_2=valid.prompt_2, parent_request_id=p.parent_request_id)
            payload.update({name: value for name, value in extra.items() if value is not None})
            source = SourceImage(image.data, image.format) if image is not None else None
            with _refusals(), _payload_fields():  # the plan may refuse the parent clip (size, fps)
                return self.jobs.submit(valid, owner, "rest", payload, source)

    def _input(self, p, owner: str, folder: Path) -> tuple[InputImage | None, ParentClip | None]:
        """Exactly one input: an image, or a finished request of this key to extend."""
        if p.parent_request_id is None:
            if p.path_input_image is None:
                rule = "is required (or give parent_request_id to extend a finished request)"
                raise InvalidRequest("payload.path_input_image", rule)
            return load_input_image(p.path_input_image, self.settings), None
        if p.path_input_image is not None:
            rule = "must be left out with parent_request_id (the parent's last frame is the start)"
            raise InvalidRequest("payload.path_input_image", rule)
        return None, self.jobs.parent(p.parent_request_id, owner, folder)

    def own(self, request_id: str, owner: str) -> Job:
        job = self.jobs.get(request_id, owner)
        if job is None:  # others' requests (and UI jobs) look absent, not forbidden
            raise ApiError(404, "not_found", f"no request {request_id[:64]!r} for this key", "request_id")
        return job

    def list(self, request: Request, owner: str, model_id, status, limit: int, offset: int) -> RequestList:
        jobs, total = self.jobs.list(owner, model_id, status, limit, offset)
        nxt = offset + len(jobs) if offset + len(jobs) < total else None
        views = [self.view(j, request) for j in jobs]
        return RequestList(requests=views, total=total, limit=limit, offset=offset, next_offset=nxt)

    def cancel(self, request_id: str, owner: str) -> Job:
        job = self.own(request_id, owner)
        before = self.jobs.cancel(job.request_id, owner)
        if before not in (Status.QUEUED, Status.PROCESSING):
            raise ApiError(409, "not_cancellable", f"request is already {before}")
        return self.own(request_id, owner)

    def view(self, job: Job, request: Request) -> RequestView:
        """The client's view of a job. A stored record that cannot be shown as stored (text UTF-8
        cannot encode, broken JSON) still renders, with unreadable text as U+FFFD and error code
        "damaged_record": never a 500 for it or for the listing that holds it, never skipped."""
        damage = job.damage
        if damage is None:
            try:
                view = self._view(job, request)
                view.model_dump_json()  # raises on text that JSON over UTF-8 cannot carry
                return view
            except (ValueError, TypeError, UnicodeError) as e:
                damage = f"it cannot be rendered ({type(e).__name__})"
        log.warning("request %s: damaged record, shown with an error: %s", clean(job.request_id), damage)
        return self._damaged_view(job, request, damage)

    def _damaged_view(self, job: Job, request: Request, damage: str) -> RequestView:
        message = f"this request's stored record is damaged: {damage}; unreadable text is shown as U+FFFD"
        if job.error_code:
            message += f" (its own error: {job.error_code}: {job.error_message})"
        error = ErrorInfo(code="damaged_record", message=clean(message))
        try:
            cleaned = replace(job, **{f.name: clean_deep(getattr(job, f.name)) for f in fields(job)})
            return self._view(cleaned, request).model_copy(update={"error": error})
        except (ValueError, TypeError, UnicodeError):  # e.g. a timestamp that is not a number
            return RequestView(
                request_id=clean(str(job.request_id)), org_id=clean(f"key_{job.owner}"),
                model=clean(str(job.model)), status=clean(str(job.status)), is_public=False, payload={},
                outcome=Outcome(), qworker_id=None, created_at=0, updated_at=0, queued_at=0, error=error,
            )  # fmt: skip

    def _view(self, job: Job, request: Request) -> RequestView:
        outcome = Outcome()
        if job.status == Status.SUCCESS:
            video, thumbnail = self._url(request, "video", job), self._url(request, "thumbnail", job)
            outcome = Outcome(video_url=video, thumbnail_image_url=thumbnail)
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
            preview_url=self._preview_url(request, job),
        )

    def _url(self, request: Request, name: str, job: Job) -> str:
        """Through this API (the Bearer key again), or a presigned bucket link that expires."""
        location = job.video_path if name == "video" else job.thumbnail_path
        if self.settings.presign_ttl_s > 0 and self.jobs.storage.remote and location:
            return self.jobs.storage.url(location, self.settings.presign_ttl_s) or ""
        path = request.url_for(name, request_id=job.request_id).path
        base = self.settings.public_url.rstrip("/") or f"{request.url.scheme}://{request.url.netloc}"
        return base + path

    def file(self, job: Job, which: str) -> Response:
        if job.status != Status.SUCCESS:
            raise ApiError(409, "not_ready", f"request is {job.status}; files exist only on success")
        location = (job.video_path if which == "video" else job.thumbnail_path) or ""
        media = "video/mp4" if which == "video" else "image/jpeg"
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
        expired = ApiError(410, "expired", "the output file was deleted (outputs expire)")
        storage = self.jobs.storage
        path = storage.local_path(location)
        if path is not None:
            if not path.is_file():
                raise expired
            return FileResponse(path, media_type=media, headers=headers)
        try:
            stream, size = storage.reader(location)
        except FileNotFoundError:
            raise expired from None
        body = iter(lambda: stream.read(CHUNK_BYTES), b"")
        return StreamingResponse(body, media_type=media, headers={**headers, "Content-Length": str(size)})

    def _preview_url(self, request: Request, job: Job) -> str | None:
        if job.status != Status.PROCESSING or not job.preview_path:
            return None
        path = request.url_for("preview", request_id=job.request_id).path
        return (self.settings.public_url.rstrip("/") or f"{request.url.scheme}://{request.url.netloc}") + path

    def preview(self, job: Job) -> Response:
        """The live preview while the job runs (a small file, read whole from storage)."""
        if job.status != Status.PROCESSING:
            raise ApiError(
                409, "not_ready", f"request is {job.status}; a preview exists only while processing"
            )
        try:
            data = self.jobs.storage.read_bytes(job.preview_path) if job.preview_path else b""
        except OSError:  # replaced and removed between the row and the read
            data = b""
        if not data:
            raise ApiError(409, "not_ready", "no preview yet; the first comes with the first denoising step")
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
        return Response(data, media_type="image/webp", headers=headers)


@contextmanager
def _refusals() -> Iterator[None]:
    """The job service's refusals as ApiErrors: capacity (429 with Retry-After), parent to extend."""
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    try:
        yield
    except TooManyActive as e:
        raise ApiError(429, "too_many_active", str(e), headers=retry) from None
    except QueueFull as e:
        raise ApiError(429, "queue_full", str(e), headers=retry) from None
    except ParentUnavailable as e:
        status, code = PARENT_ERRORS[e.reason]
        raise ApiError(status, code, str(e), PARENT_FIELD) from None


@contextmanager
def _payload_fields() -> Iterator[None]:
    """Field names as the REST payload spells them (the clip to extend is parent_request_id here)."""
    try:
        yield
    except InvalidRequest as e:
        field = PARENT_FIELD if e.field == "video" else f"payload.{e.field}"
        raise InvalidRequest(field, e.rule) from None


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
