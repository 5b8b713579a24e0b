"""REST job API with the hosted provider's contract, mounted at /api/v1 on the Gradio server.

HTTP <-> RestService only: inputs are checked by core/validate.py and rest/inputs.py (InvalidRequest,
mapped here to 4xx), rules live in rest/service.py, which reaches jobs through jobs.JobService (the
queue shared with the UI). Outcome files need the same Bearer key as the request.
OpenAPI: /api/v1/openapi.json, docs at /api/v1/docs.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount

from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import API_MODEL_ID
from wan_demo.jobs.common import Status, StoreUnavailable
from wan_demo.jobs.health import RETRY_AFTER_S, Draining
from wan_demo.rest.errors import BodyLimit, InternalErrors, error_response, store_unavailable
from wan_demo.rest.keys import SETUP_HINT
from wan_demo.rest.ops import RequestScope
from wan_demo.rest.ratelimit import SubmitBudgets, ticket_of
from wan_demo.rest.schema import (
    ErrorBody,
    ModelIds,
    ModelInfo,
    ModelStatus,
    RequestList,
    RequestView,
    SubmitBody,
    Submitted,
    model_info,
)
from wan_demo.rest.service import KEY_HEADER, ApiError, RestService

log = logging.getLogger(__name__)

MOUNT = "/api/v1"
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 410, 413, 422, 429, 500, 503)}
MAX_OFFSET = 1_000_000_000  # far past any key's history; SQLite's OFFSET overflows past 2**63 - 1
MAX_ID_CHARS = 64  # request ids are 36-character UUIDs
MAX_MODEL_ID_CHARS = 128  # model ids are short names like Wan-AI_Wan2.1-I2V-14B-480P
RequestId = Annotated[str, Path(max_length=MAX_ID_CHARS)]
ModelId = Annotated[str, Path(max_length=MAX_MODEL_ID_CHARS)]
MAX_KEY_CHARS = 255  # Idempotency-Key: a UUID or any printable ASCII token up to this length
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=KEY_HEADER, min_length=1, max_length=MAX_KEY_CHARS, pattern=r"^[ -~]+$",
        description="retry-safe submits: the same key and body within 24 h return the first request "
        "(same request_id); the same key with another body answers 409. Scoped to your API key.",
    ),
]  # fmt: skip


def build_app(service: RestService) -> FastAPI:
    app = FastAPI(title="Wan2.1 I2V REST API", version="1", docs_url="/docs", openapi_url="/openapi.json")
    limit = service.settings.max_file_size_mb * 1024 * 1024 * 4 // 3 + 64 * 1024  # base64 + JSON overhead
    app.add_middleware(BodyLimit, max_bytes=limit)
    # every submit answer is counted and carries RateLimit-* (the 413 of BodyLimit too)
    refused = service.jobs.metrics.refused.labels("rate_limited").inc
    app.add_middleware(SubmitBudgets, limit=service.limit, owner_of=service.keys.owner_of, on_limited=refused)
    app.add_middleware(InternalErrors)  # added late = outer: it also covers the others
    app.add_middleware(RequestScope, drain=service.jobs.drain)  # outermost: request id, in-flight count
    _add_handlers(app)
    caller = Depends(service.caller)
    kw = {"responses": ERRORS}

    @app.post("/apikey/requests", response_model=Submitted, **kw)
    def submit_request(body: SubmitBody, request: Request, owner: str = caller, key: IdempotencyKey = None):
        # the ticket: this submit's place in the key's budgets (rest/ratelimit.py; a batch per video)
        jobs, replayed = service.submit(body, owner, service.base(request), key, ticket_of(request.scope))
        rec = jobs[0]
        location = request.url_for("get_request", request_id=rec.request_id).path
        data = Submitted(
            request_id=rec.request_id,
            model=rec.model,
            status=rec.status,
            created_at=int(rec.created_at),
            updated_at=int(rec.updated_at),
            queued_at=int(rec.queued_at),
            request_ids=[j.request_id for j in jobs],
            batch_id=rec.batch_id,
        )
        headers = {"Location": location, **({"Idempotent-Replayed": "true"} if replayed else {})}
        return JSONResponse(data.model_dump(), headers=headers)

    @app.get("/apikey/requests", response_model=RequestList, **kw)
    def list_requests(
        request: Request,
        model_id: str | None = Query(None, max_length=MAX_MODEL_ID_CHARS),
        status: Status | None = None,
        limit: int = Query(20, ge=1, le=100),
        offset: int = Query(0, ge=0, le=MAX_OFFSET),
        batch_id: str | None = Query(None, max_length=MAX_ID_CHARS, description="only this batch's requests"),
        owner: str = caller,
    ):
        return service.list(service.base(request), owner, model_id, status, limit, offset, batch_id)

    @app.get("/apikey/requests/{request_id}", response_model=RequestView, name="get_request", **kw)
    def get_request(request_id: RequestId, request: Request, owner: str = caller):
        return service.views.view(service.own(request_id, owner), service.base(request))

    @app.post("/apikey/requests/{request_id}/cancel", response_model=RequestView, **kw)
    def cancel_request(request_id: RequestId, request: Request, owner: str = caller):
        return service.views.view(service.cancel(request_id, owner), service.base(request))

    def file_kw(media: str, response: type = FileResponse) -> dict:
        return {"response_class": response, "responses": {200: {"content": {media: {}}}, **ERRORS}}

    @app.get("/apikey/requests/{request_id}/video", name="video", **file_kw("video/mp4"))
    def video(request_id: RequestId, owner: str = caller):
        return service.file(service.own(request_id, owner), "video")

    @app.get("/apikey/requests/{request_id}/thumbnail", name="thumbnail", **file_kw("image/jpeg"))
    def thumbnail(request_id: RequestId, owner: str = caller):
        return service.file(service.own(request_id, owner), "thumbnail")

    @app.get("/apikey/requests/{request_id}/preview", name="preview", **file_kw("image/webp", Response))
    def preview(request_id: RequestId, owner: str = caller):
        """Live preview (animated WEBP) of a processing request; 409 before the first one and after."""
        return service.preview(service.own(request_id, owner))

    @app.get("/apikey/models", response_model=ModelIds, **kw)
    def list_models(owner: str = caller):
        return ModelIds(model_ids=[API_MODEL_ID])

    @app.get("/apikey/models/{model_id}", response_model=ModelInfo, **kw)
    def get_model(model_id: ModelId, owner: str = caller):
        if model_id != API_MODEL_ID:
            raise ApiError(
                404, "unknown_model", f"{model_id[:80]!r} is not served here; use {API_MODEL_ID!r}"
            )
        return model_info().model_copy(update={"status": ModelStatus(**service.jobs.model_state().as_dict())})

    return app


def _add_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request, e: ApiError):
        return error_response(e.status, e.code, e.message, e.field, e.headers)

    @app.exception_handler(StoreUnavailable)
    async def store_down(_request, e: StoreUnavailable):
        return store_unavailable()

    @app.exception_handler(Draining)
    async def draining(_request, e: Draining):
        return error_response(503, "draining", str(e), headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(InvalidRequest)
    async def invalid(_request, e: InvalidRequest):
        return error_response(422, "invalid_input", str(e), e.field)

    @app.exception_handler(RequestValidationError)
    async def malformed(_request, e: RequestValidationError):
        first = e.errors()[0]
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        code = "invalid_json" if first.get("type") == "json_invalid" else "invalid_input"
        return error_response(400 if code == "invalid_json" else 422, code, f"{field}: {first['msg']}", field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, e: StarletteHTTPException):
        return error_response(e.status_code, "http_error", str(e.detail), headers=getattr(e, "headers", None))


class RestMount(Mount):
    """Starlette's Mount pattern ends in `.*`, which stops at a newline: a path holding %0A fell
    through to Gradio's plain 404. This one owns every path under its prefix."""

    def __init__(self, path: str, app) -> None:
        super().__init__(path, app=app)
        self.path_regex = re.compile(self.path_regex.pattern, re.DOTALL)


def attach(app, service: RestService) -> None:
    """Add the /api/v1/apikey/* routes to the running FastAPI app (before Gradio's own routes)."""
    if not service.keys.enabled:
        log.warning(SETUP_HINT)
    app.router.routes.insert(0, RestMount(MOUNT, app=build_app(service)))
