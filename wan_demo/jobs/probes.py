"""The operations endpoints without a web framework: /metrics, /healthz and /readyz as a small WSGI
app, served by a worker on `Settings.metrics_port` (a worker has no HTTP server of its own), and
the rules the REST node's routes (rest/ops.py) share with it: the metrics token and the answers.

- /healthz: 200 while the process serves (liveness: restart it when this fails).
- /readyz: 200 when JobService.readiness() says ready, else 503; the JSON says why (readiness:
  route traffic / count it as a member only while this is 200).
- /metrics: Prometheus text; with a token configured (Settings.metrics_token or the first line of
  Settings.metrics_token_file) it wants `Authorization: Bearer <token>`, else answers 401.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from wan_demo.core.settings import Settings

if TYPE_CHECKING:
    from wan_demo.jobs.service import JobService

log = logging.getLogger(__name__)


def metrics_token(settings: Settings) -> str:
    """The configured token ("" = /metrics is open). A file wins over the env var."""
    if settings.metrics_token_file:
        lines = Path(settings.metrics_token_file).read_text(encoding="utf-8").splitlines()
        return lines[0].strip() if lines else ""
    return settings.metrics_token.strip()


def token_ok(authorization: str | None, token: str) -> bool:
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def answer(jobs: JobService, path: str, authorization: str | None, token: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of one operations endpoint; 404 for other paths."""
    if path == "/healthz":
        return 200, "application/json", b'{"status": "ok"}'
    if path == "/readyz":
        state = jobs.readiness()
        return (200 if state["ready"] else 503), "application/json", json.dumps(state).encode()
    if path == "/metrics":
        if not token_ok(authorization, token):
            return 401, "application/json", b'{"error": "missing or wrong metrics token"}'
        body, kind = jobs.metrics.exposition()
        return 200, kind, body
    return 404, "application/json", b'{"error": "not found"}'


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *_args: Any) -> None:  # scrapes every few seconds: no access log
        pass


class ProbeServer:
    """/metrics, /healthz, /readyz on their own port, in a thread; `start()` binds, `stop()` closes."""

    def __init__(self, jobs: JobService, settings: Settings):
        self.jobs, self.settings = jobs, settings
        self.token = metrics_token(settings)
        self._server: _Server | None = None

    def app(self, environ: dict, start_response) -> list[bytes]:
        path, authorization = environ.get("PATH_INFO", ""), environ.get("HTTP_AUTHORIZATION")
        status, kind, body = answer(self.jobs, path, authorization, self.token)
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable"}[status]
        headers = [("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        if status == 401:
            headers.append(("WWW-Authenticate", "Bearer"))
        start_response(f"{status} {reason}", headers)
        return [body]

    def start(self) -> ProbeServer:
        host, port = self.settings.host, self.settings.metrics_port
        self._server = make_server(host, port, self.app, server_class=_Server, handler_class=_Quiet)
        threading.Thread(target=self._server.serve_forever, name="probe-server", daemon=True).start()
        log.info("metrics and probes at http://%s:%d/metrics", self.settings.host, self.port)
        return self

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else 0

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
