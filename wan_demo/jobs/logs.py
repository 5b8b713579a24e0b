"""Logging for every role: plain text by default, one JSON object per line on request
(Settings.log_format = "json", with `python-json-logger`), for log shippers that index fields.

Each line carries what it is about when known, from context variables set where the work happens:
`request_id` (one HTTP request: the client's X-Request-Id if it is a short token, else a new one),
`job_id` (the job a worker runs, or the one a REST route acts on) and `owner_hash` (a SHA-256 prefix
of the job's owner, itself a key id: never the key). Prompts and keys are never logged: no call
site passes them, and the formatter only adds the three fields above to what the message says.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from wan_demo.core.choices import LOG_FORMATS

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"
CONTEXT = ("request_id", "job_id", "owner_hash")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
owner_hash: contextvars.ContextVar[str | None] = contextvars.ContextVar("owner_hash", default=None)
# One HTTP request's fields, a dict shared by the copies of the context its handlers run in (a sync
# dependency runs in a thread with a copy: setting a variable there would not reach the route).
request_fields: contextvars.ContextVar[dict | None] = contextvars.ContextVar("request_fields", default=None)


def note_owner(owner: str) -> None:
    """The current HTTP request (or job) acts for `owner`: its lines carry the owner's hash."""
    fields = request_fields.get()
    if fields is not None:
        fields["owner_hash"] = hash_owner(owner)
    else:
        owner_hash.set(hash_owner(owner))


def hash_owner(owner: str) -> str:
    return hashlib.sha256(owner.encode("utf-8", "replace")).hexdigest()[:12]


@contextmanager
def job_context(job: str, owner: str | None = None) -> Iterator[None]:
    """Log lines inside carry this job id (and the owner's hash)."""
    tokens = [(job_id, job_id.set(job))]
    if owner is not None:
        tokens.append((owner_hash, owner_hash.set(hash_owner(owner))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Adds request_id / job_id / owner_hash (when set) to every record, and a text suffix."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = dict(request_fields.get() or {})
        for name, var in zip(CONTEXT, (request_id, job_id, owner_hash), strict=True):
            if var.get() is not None:
                found[name] = var.get()
        for name, value in found.items():
            setattr(record, name, value)
        record.context = "".join(f" [{k}={v}]" for k, v in found.items())
        return True


def configure(log_format: str = "text", level: int = logging.INFO) -> logging.Handler:
    """One stderr handler on the root logger in the chosen format; returns it."""
    if log_format not in LOG_FORMATS:  # Settings refuses it first; a caller in code gets the same rule
        raise ValueError(f"log_format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}", style="{", reserved_attrs=[*_RESERVED, "context"],
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )  # fmt: skip
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler


def adopt_uvicorn() -> None:
    """uvicorn (started by Gradio) logs through its own text handlers: send them through ours."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


_RESERVED = [
    "args", "created", "exc_info", "exc_text", "filename", "funcName", "levelno", "lineno", "module",
    "msecs", "msg", "pathname", "process", "processName", "relativeCreated", "stack_info", "thread",
    "threadName", "taskName",
]  # fmt: skip  # LogRecord attributes left out of the JSON (message, time, level, logger stay)
