"""The REST layer's state and rules between HTTP and the store: auth, admission, views, files.

Routes in api.py stay thin: they call RestService and render what it returns. Bad input arrives here
as InvalidRequest (validate.py / inputs.py); refusals of our own are ApiError(status, code, ...).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse

from wan_demo.core import validate
from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import API_MODEL_ID, Settings
from wan_demo.jobs.dispatch import Dispatcher
from wan_demo.jobs.store_sqlite import ACTIVE, PROCESSING, QUEUED, SUCCESS, SqliteStore, StoredRequest
from wan_demo.jobs.worker import Worker
from wan_demo.rest.inputs import load_input_image
from wan_demo.rest.keys import SETUP_HINT, KeyRing
from wan_demo.rest.schema import Outcome, RequestView, SubmitBody

log = logging.getLogger(__name__)

RETRY_AFTER_S = 30  # hint on 429: roughly one generation on a fast GPU
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


class RestService:
    """The REST layer's state: keys, store, dispatcher. Routes are thin methods over it."""

    def __init__(self, worker: Worker, settings: Settings, keys: KeyRing):
        self.settings, self.keys = settings, keys
        self.inputs_dir = Path(settings.data_dir) / "inputs"
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        self.store = SqliteStore(Path(settings.data_dir) / "requests.sqlite3")
        recovered = self.store.recover()
        if any(recovered.values()):
            log.warning("REST requests recovered after a restart: %s", recovered)
        self.dispatcher = Dispatcher(self.store, worker).start()
        self._admit = threading.Lock()  # capacity check + insert are one step

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

    def submit(self, body: SubmitBody, owner: str) -> StoredRequest:
        if body.model != API_MODEL_ID:
            raise InvalidRequest("model", f"{body.model[:80]!r} is not served here; use {API_MODEL_ID!r}")
        p = body.payload
        try:
            payload = {
                "prompt": validate.check_prompt(p.prompt),
                "video_length": validate.check_video_length(p.video_length),
                "prompt_extend": p.prompt_extend,
                "seed": validate.check_seed(p.seed),
            }
        except InvalidRequest as e:
            raise InvalidRequest(f"payload.{e.field}", e.rule) from None
        self._check_capacity(owner)  # before the (possibly remote) image work
        image = load_input_image(p.path_input_image, self.settings)
        payload["path_input_image"] = image.echo
        request_id = str(uuid.uuid4())
        path = self.inputs_dir / f"{request_id}.{EXTENSIONS[image.format]}"
        _write_durably(path, image.data)
        rec = StoredRequest(request_id, owner, API_MODEL_ID, payload, str(path))
        with self._admit:
            self._check_capacity(owner)
            self.store.add(rec)  # committed (fsynced) before the client hears 2xx
        self.dispatcher.wake()
        return rec

    def _check_capacity(self, owner: str) -> None:
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        active = self.store.count(ACTIVE, owner)
        if active >= self.settings.max_active_per_key:
            limit = self.settings.max_active_per_key
            raise ApiError(
                429,
                "too_many_active",
                f"this key has {active} active requests; the limit is {limit}",
                headers=retry,
            )
        if self.store.count((QUEUED,)) >= self.settings.queue_max_size:
            raise ApiError(
                429,
                "queue_full",
                f"{self.settings.queue_max_size} requests are waiting; try later",
                headers=retry,
            )

    def own(self, request_id: str, owner: str) -> StoredRequest:
        rec = self.store.get(request_id)
        if rec is None or rec.owner != owner:  # others' requests look absent, not forbidden
            raise ApiError(404, "not_found", f"no request {request_id[:64]!r} for this key", "request_id")
        return rec

    def view(self, rec: StoredRequest, request: Request) -> RequestView:
        outcome = Outcome()
        if rec.status == SUCCESS:
            outcome = Outcome(
                video_url=self._url(request, "video", rec),
                thumbnail_image_url=self._url(request, "thumbnail", rec),
            )
        position = None
        if rec.status == QUEUED:
            position = self.store.queue_position(rec)
        elif rec.status == PROCESSING:
            position = self.dispatcher.worker_position(rec.request_id) or 0
        error = None
        if rec.error_code:
            error = {"code": rec.error_code, "message": rec.error_message or rec.error_code}
        return RequestView(
            request_id=rec.request_id,
            org_id=f"key_{rec.owner}",
            model=rec.model,
            status=rec.status,
            is_public=False,
            payload=rec.payload,
            outcome=outcome,
            qworker_id=rec.worker_id,
            created_at=int(rec.created_at),
            updated_at=int(rec.updated_at),
            queued_at=int(rec.queued_at),
            started_at=_int(rec.started_at),
            completed_at=_int(rec.completed_at),
            queue_position=position,
            progress=rec.progress,
            error=error,
            final_prompt=rec.final_prompt,
            seed_used=rec.seed_used,
        )

    def _url(self, request: Request, name: str, rec: StoredRequest) -> str:
        path = request.url_for(name, request_id=rec.request_id).path
        base = self.settings.public_url.rstrip("/") or f"{request.url.scheme}://{request.url.netloc}"
        return base + path

    def file(self, rec: StoredRequest, which: str) -> FileResponse:
        if rec.status != SUCCESS:
            raise ApiError(409, "not_ready", f"request is {rec.status}; files exist only on success")
        path = Path(rec.video_path if which == "video" else rec.thumbnail_path or "")
        if not path.is_file():
            raise ApiError(410, "expired", "the output file was deleted (outputs expire)")
        media = "video/mp4" if which == "video" else "image/jpeg"
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
        return FileResponse(path, media_type=media, headers=headers)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
