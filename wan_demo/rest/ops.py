"""Operations routes on the HTTP-serving node, off the public REST prefix: /metrics (Prometheus,
optionally behind its own token), /healthz and /readyz (jobs/probes.py has the rules; a worker serves
the same three on Settings.metrics_port), and the drain middleware of the REST routes.
"""

from __future__ import annotations

import re
import uuid

from fastapi.responses import Response
from starlette.routing import Route

from wan_demo.jobs import logs
from wan_demo.jobs.health import Drain
from wan_demo.jobs.probes import answer, metrics_token
from wan_demo.jobs.service import JobService

PATHS = ("/metrics", "/healthz", "/readyz")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # a client's X-Request-Id is kept only if it is this


def attach(app, jobs: JobService, settings) -> None:
    """Add the three routes to the running FastAPI app, before Gradio's own."""
    token = metrics_token(settings)

    async def endpoint(request) -> Response:
        def run() -> tuple[int, str, bytes]:
            with jobs.drain.request():
                return answer(jobs, request.url.path, request.headers.get("authorization"), token)

        from starlette.concurrency import run_in_threadpool

        status, kind, body = await run_in_threadpool(run)  # the store is read with blocking calls
        headers = {"Cache-Control": "no-store"} | ({"WWW-Authenticate": "Bearer"} if status == 401 else {})
        return Response(body, status_code=status, media_type=kind, headers=headers)

    for path in reversed(PATHS):
        app.router.routes.insert(0, Route(path, endpoint, methods=["GET"]))


class RequestScope:
    """ASGI middleware of the REST app: each request gets a request id (logged, and echoed in
    X-Request-Id) and counts as in flight for the drain; one that arrived before the drain began
    may still submit (jobs/health.py)."""

    def __init__(self, app, drain: Drain):
        self.app, self.drain = app, drain

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if REQUEST_ID.match(given) else uuid.uuid4().hex

        async def tagged(event):
            sent = [name.lower() for name, _ in event.get("headers", [])]
            if event["type"] == "http.response.start" and b"x-request-id" not in sent:  # one, not two
                event = {**event, "headers": [*event.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(event)

        token = logs.request_fields.set({"request_id": rid})
        try:
            with self.drain.request():
                await self.app(scope, receive, tagged)
        finally:
            logs.request_fields.reset(token)
