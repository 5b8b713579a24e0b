"""The REST layer's rules between HTTP and the job service: auth, a batch's rate-limit cost,
idempotency, admission, views, files, webhooks.

Routes (rest/routes.py) stay thin: they call RestService and render what it returns. Bad input
arrives as InvalidRequest (core/validate.py, rest/inputs.py, rest/webhooks.py); refusals of our own
are ApiError(status, code, ...). Jobs are reached only through jobs.service.JobService. Building
opens nothing; `start()` starts the webhook deliverers and the rate limiter.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from wan_demo.core.controls import NUM_VIDEOS, api_field, check_control
from wan_demo.core.plan import batch_seeds
from wan_demo.core.request import InvalidRequest, ParentClip
from wan_demo.core.settings import API_MODEL_ID, Settings
from wan_demo.core.validate import validate
from wan_demo.jobs import logs
from wan_demo.jobs.common import IdempotentReplay, Job, ParentUnavailable, QueueFull, Status, TooManyActive
from wan_demo.jobs.loading import LoadFailed
from wan_demo.jobs.service import JobService
from wan_demo.rest.inputs import InputImage, load_input_image, lora_fetcher
from wan_demo.rest.keys import SETUP_HINT, KeyRing
from wan_demo.rest.payload import body_hash, payload_echo, request_of, source_of
from wan_demo.rest.ratelimit import SubmitLimit, Ticket, limited_message
from wan_demo.rest.schema import RequestList, SubmitBody
from wan_demo.rest.views import Views
from wan_demo.rest.webhooks import Deliverer, check_webhook

log = logging.getLogger(__name__)

RETRY_AFTER_S = 30  # hint on 429: roughly one generation on a fast GPU
CHUNK_BYTES = 1 << 20  # outputs from a bucket are streamed in 1 MiB pieces
KEY_HEADER = "Idempotency-Key"
PARENT_FIELD = "payload.parent_request_id"
LAST = "payload.path_last_image"
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
        self.views = Views(jobs, settings)
        self.limit = SubmitLimit(settings.submits_per_min, jobs.store)  # counted in the shared store
        self.deliverer = Deliverer(jobs.store, settings, self.views.body, metrics=jobs.metrics)
        self.fetch_lora = lora_fetcher(settings)  # LoRA URLs under the URL-input rules (tests aim it)

    def start(self) -> RestService:
        self.limit.start()
        self.deliverer.start()
        return self

    def stop(self) -> None:
        self.deliverer.stop()

    def base(self, request: Request) -> str:
        """Where outcome links start: Settings.public_url, else this request's scheme and host."""
        return self.settings.public_url.rstrip("/") or f"{request.url.scheme}://{request.url.netloc}"

    def rate(self, ticket: Ticket | None, body: SubmitBody) -> None:
        """Charge the submit's ticket (rest/ratelimit.py; None: no limit) with the jobs the body asks
        for, a batch its number of videos (an out-of-range num_videos as 1: it is refused): 429 when
        they do not fit this minute, 422 when they never could."""
        n = body.payload.num_videos
        n = n if isinstance(n, int) and NUM_VIDEOS.low <= n <= NUM_VIDEOS.high else 1
        if ticket is None:
            return
        if n > self.limit.per_min:
            why = f"a batch of {n} is more than this key's {self.limit.per_min} submits per minute"
            raise InvalidRequest("payload.num_videos", f"{why}; send fewer videos per submit")
        if not self.limit.charge(ticket, n):
            self.jobs.metrics.refused.labels("rate_limited").inc()
            message = limited_message(self.limit.submits) + f" (this submit adds {n})"
            raise ApiError(429, "rate_limited", message)  # RateLimit-* and Retry-After: SubmitBudgets

    def caller(self, request: Request) -> str:
        if not self.keys.enabled:
            raise ApiError(503, "api_disabled", SETUP_HINT)
        owner = self.keys.owner_of(request.headers.get("authorization"))
        if owner is not None:
            logs.note_owner(owner)  # this request's log lines carry its hash (never the key)
        if owner is None:
            raise ApiError(
                401,
                "unauthorized",
                "missing or invalid API key; send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return owner

    def submit(
        self, body: SubmitBody, owner: str, base: str, key: str | None = None, ticket: Ticket | None = None
    ) -> tuple[list[Job], bool]:
        """Queue the request, num_videos jobs with seeds seed, seed + 1, ... (or, for an
        Idempotency-Key used within 24 h with the same body, find what it queued then). `ticket`:
        the submit's rate-limit ticket, charged with the batch once it is not a replay.
        Returns (jobs, replayed)."""
        if body.model != API_MODEL_ID:
            raise InvalidRequest("model", f"{body.model[:80]!r} is not served here; use {API_MODEL_ID!r}")
        digest = body_hash(body) if key is not None else ""
        if key is not None and (found := self.jobs.replay(owner, key)) is not None:
            return self._batch(self._replayed(IdempotentReplay(found[0], found[1] == digest), owner)), True
        self.rate(ticket, body)  # before any work on the body (image, webhook address)
        hook = None
        if body.webhook_url is not None:
            hook = check_webhook(body.webhook_url, body.webhook_events, self.settings, base)
        elif body.webhook_events is not None:
            raise InvalidRequest("webhook_events", "needs webhook_url")
        p, keyed = body.payload, (key, digest) if key is not None else None
        with _payload_fields():
            count = check_control(NUM_VIDEOS.name, p.num_videos)
        with tempfile.TemporaryDirectory(prefix="wan-demo-parent-") as folder:  # a parent from a bucket
            with _refusals():
                self.jobs.check_capacity(owner, True, count)  # before the (possibly remote) image work
                image, parent = self._input(p, owner, Path(folder))
                end = (
                    None
                    if p.path_last_image is None
                    else load_input_image(p.path_last_image, self.settings, LAST)
                )
            with _payload_fields():
                valid = validate(request_of(p, image, parent, end))
                # the LoRA files found and checked before queueing: refusals name the file
                valid = self.jobs.resolve_loras(valid, self.fetch_lora)
            requests = [replace(valid, seed=seed) for seed in batch_seeds(valid.seed, count)]
            payloads = [payload_echo(p, r, image, end) for r in requests]
            try:
                with _refusals(), _payload_fields():  # the plan may refuse the parent clip (size, fps)
                    jobs = self.jobs.submit_batch(
                        requests, owner, "rest", payloads, source_of(image), hook, keyed, source_of(end)
                    )
            except IdempotentReplay as e:  # a concurrent retry with the same key got there first
                return self._batch(self._replayed(e, owner)), True
        return jobs, False

    def _batch(self, job: Job) -> list[Job]:
        """The jobs of `job`'s submit, first-queued first (just `job` when it is alone)."""
        if job.batch_id is None:
            return [job]
        jobs, _ = self.jobs.list(job.owner, limit=NUM_VIDEOS.high, batch_id=job.batch_id)
        return sorted(jobs, key=lambda j: (j.created_at, j.request_id != job.request_id)) or [job]

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

    def _replayed(self, replay: IdempotentReplay, owner: str) -> Job:
        job = self.jobs.get(replay.request_id, owner)
        if not replay.same_body:
            raise ApiError(
                409, "idempotency_conflict",
                f"this {KEY_HEADER} was used with a different body in the last 24 h (request "
                f"{replay.request_id}); send a new key for a new request", KEY_HEADER,
            )  # fmt: skip
        if job is None:  # deleted meanwhile (history retention shorter than 24 h)
            raise ApiError(
                409, "idempotency_conflict", f"this {KEY_HEADER}'s request no longer exists", KEY_HEADER
            )
        return job

    def own(self, request_id: str, owner: str) -> Job:
        job = self.jobs.get(request_id, owner)
        if job is None:  # others' requests (and UI jobs) look absent, not forbidden
            raise ApiError(404, "not_found", f"no request {request_id[:64]!r} for this key", "request_id")
        return job

    def list(
        self, base: str, owner: str, model_id, status, limit: int, offset: int, batch_id: str | None = None
    ) -> RequestList:
        jobs, total = self.jobs.list(owner, model_id, status, limit, offset, batch_id)
        nxt = offset + len(jobs) if offset + len(jobs) < total else None
        views = [self.views.view(j, base) for j in jobs]
        return RequestList(requests=views, total=total, limit=limit, offset=offset, next_offset=nxt)

    def cancel(self, request_id: str, owner: str) -> Job:
        job = self.own(request_id, owner)
        before = self.jobs.cancel(job.request_id, owner)
        if before not in (Status.QUEUED, Status.PROCESSING):
            raise ApiError(409, "not_cancellable", f"request is already {before}")
        return self.own(request_id, owner)

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
    except LoadFailed as e:  # no Retry-After: it takes a restart with working settings
        raise ApiError(503, "model_unavailable", f"the model failed to load: {e}") from None
    except ParentUnavailable as e:
        status, code = PARENT_ERRORS[e.reason]
        raise ApiError(status, code, str(e), PARENT_FIELD) from None


@contextmanager
def _payload_fields() -> Iterator[None]:
    """Field names as the REST payload spells them: num_inference_steps for steps (core/controls.py),
    parent_request_id for the clip to extend."""
    try:
        yield
    except InvalidRequest as e:
        named = {"video": PARENT_FIELD, "last_image": LAST}  # the REST fields of the pictures
        field = named.get(e.field) or f"payload.{api_field(e.field)}"
        raise InvalidRequest(field, e.rule) from None
