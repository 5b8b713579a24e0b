"""Every REST answer that is not a success is one JSON shape: {"error": {"code", "message", "field"}}.

Two ASGI middlewares keep it so whatever happens: BodyLimit (413 for bodies over the limit, counted
as they stream in) and InternalErrors (an exception no handler took answers 500 with code
"internal" and an error id that the log line with the traceback also carries; the client never
sees plain text or a traceback).
"""

from __future__ import annotations

import logging
import uuid

from fastapi.responses import JSONResponse

from wan_demo.core.validate import encodable
from wan_demo.jobs import logs

log = logging.getLogger(__name__)

STORE_RETRY_S = 5  # Retry-After while the job database is unreachable (a restart takes seconds)


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers=None, **extra: str
) -> JSONResponse:
    """Text is made encodable: a field name or message may quote what a client sent."""
    field = None if field is None else encodable(field)
    error = {"code": code, "message": encodable(message), "field": field}
    return JSONResponse({"error": {**error, **extra}}, status_code=status, headers=headers)


def store_unavailable() -> JSONResponse:
    """The answer while the job database cannot be reached (StoreUnavailable)."""
    message = "the job database is unavailable; retry shortly"
    return error_response(503, "unavailable", message, headers={"Retry-After": str(STORE_RETRY_S)})


class BodyLimit:
    """ASGI middleware: 413 for request bodies over the limit, counted as they stream in (a body
    without Content-Length is cut off at the limit; the app's own answer is then replaced)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        message = f"request body is over {self.max_bytes} bytes"
        too_large = error_response(413, "body_too_large", message, "body")
        if length.isdigit() and int(length) > self.max_bytes:
            return await too_large(scope, receive, send)
        seen, over = 0, False

        async def counted():
            nonlocal seen, over
            event = await receive()
            seen += len(event.get("body", b""))
            if seen > self.max_bytes:
                over = True
                return {"type": "http.request", "body": b"", "more_body": False}  # stop reading here
            return event

        async def guarded(event):
            if not over:  # once over, the app's (parse error) answer is dropped
                await send(event)

        await self.app(scope, counted, guarded)
        if over:
            await too_large(scope, receive, send)


class InternalErrors:
    """ASGI middleware (outermost): an unhandled exception answers 500 JSON with an error id, logged
    with the traceback. Once a response has started (a file streaming) it can only be logged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(event):
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, receive, tracked)
        except Exception:  # noqa: BLE001  # the point of this middleware: answer, log, go on
            # the request's own id when RequestScope (outside) gave one: it tags the answer itself
            scoped = (logs.request_fields.get() or {}).get("request_id")
            error_id = scoped or uuid.uuid4().hex
            where = f"{scope.get('method')} {scope.get('path')!r}"
            log.exception("internal error %s on %s", error_id, where)
            if not started:
                message = f"internal server error; quote request_id {error_id} when reporting it"
                answer = error_response(500, "internal", message, request_id=error_id)
                if not scoped:
                    answer.headers["X-Request-Id"] = error_id
                await answer(scope, receive, send)
