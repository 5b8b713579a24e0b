"""Raw-HTTP callers of /generate and /extend that send the 10 values of before issue 24 keep working.

Issue 24 appended five parameters (last_image, nag_scale, nag_tau, nag_alpha, interpolate) to both
endpoints, with defaults: gradio_client and MCP callers fill them in by themselves, but Gradio 6.31's
`POST /gradio_api/call/<name>` refuses a `data` list shorter than the event's inputs ("didn't receive
enough input values"). A route put before Gradio's takes those two calls: a body whose `data` holds
exactly the old 10 values gets the five defaults appended; anything else is passed on unchanged.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.routing import BaseRoute, Match, NoMatchFound

LEGACY_VALUES = 10  # image/video, prompt, ..., prompt_2: the parameters before issue 24
APPENDED_DEFAULTS = [None, 0, 0, 0, False]  # last_image, nag_scale, nag_tau, nag_alpha, interpolate
PATH = re.compile(r"/gradio_api/call/(generate|extend)/?")
MAX_BODY = 1 << 20  # bytes; the call carries file references, not files (larger: passed through as is)
MARK = "wan_demo.padded"  # scope key: this request went through LegacyCalls already


def keep_legacy_calls(app: Any) -> None:
    """Put the padding route first in `app` (a started Gradio FastAPI app), as rest/routes.attach
    puts the REST mount: it pads the body, then hands the call back to the app's own routes."""
    app.router.routes.insert(0, LegacyCalls(app.router))


def padded(body: bytes) -> bytes:
    """The body with the defaults appended when its `data` is a list of exactly the old 10 values."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    values = data.get("data") if isinstance(data, dict) else None
    if not isinstance(values, list) or len(values) != LEGACY_VALUES:
        return body
    return json.dumps({**data, "data": [*values, *APPENDED_DEFAULTS]}).encode()


class LegacyCalls(BaseRoute):
    """Matches `POST /gradio_api/call/generate|extend` once; reads the body (bounded), pads it and
    replays it to `router`, where the request (marked as padded) reaches Gradio's own route."""

    def __init__(self, router: Any):
        self.router = router

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)  # names no route: url_for() looks further

    def matches(self, scope: dict) -> tuple[Match, dict]:
        wanted = scope.get("type") == "http" and scope.get("method") == "POST" and not scope.get(MARK)
        return (Match.FULL, {}) if wanted and PATH.fullmatch(scope.get("path", "")) else (Match.NONE, {})

    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        chunks, size, more = [], 0, True
        while more and size <= MAX_BODY:
            message = await receive()
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        body = b"".join(chunks) if more else padded(b"".join(chunks))
        headers = scope.get("headers", [])
        if not more:  # the whole body is here: say its new length
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": more}

        await self.router({**scope, "headers": headers, MARK: True}, replay, send)
