"""Types shared by the job store, the worker and the service: statuses, the job record, refusals."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from wan_demo.core.request import Progress


class Status(StrEnum):
    """A job's lifecycle: queued -> processing -> success | failed | cancelled (terminal, final)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (Status.QUEUED, Status.PROCESSING)
TERMINAL = (Status.SUCCESS, Status.FAILED, Status.CANCELLED)
MAX_ATTEMPTS = 2  # default Settings.max_attempts: real runs (reached denoising) before worker_lost
CLAIMS_PER_ATTEMPT = 3  # a job claimed this many times per allowed attempt without ever denoising
# (a crash loop before the first step) also fails with worker_lost


class StoreUnavailable(Exception):
    """The job database cannot be reached right now (restarting, network): retry shortly (REST: 503)."""


class QueueFull(Exception):
    """More jobs are waiting than Settings.queue_max_size."""


class TooManyActive(Exception):
    """One owner (an API key) has Settings.max_active_per_key jobs queued or running."""


class ParentUnavailable(Exception):
    """A clip to extend cannot be used. `reason`: "not_found" (unknown, or another owner's),
    "not_success" (failed, cancelled or not finished) or "expired" (its video was deleted)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class IdempotentReplay(Exception):
    """An Idempotency-Key this owner already used (within IDEMPOTENCY_S): nothing new was queued."""

    def __init__(self, request_id: str, same_body: bool):
        super().__init__(f"idempotency key already used for request {request_id}")
        self.request_id, self.same_body = request_id, same_body


IDEMPOTENCY_S = 24 * 3600.0  # an Idempotency-Key answers with its first request this long
WEBHOOK_EVENTS = ("processing", "progress", "completed")  # what a webhook may subscribe to


@dataclass
class Job:
    """One generation request as the store keeps it, from any source (UI, Gradio API, REST)."""

    request_id: str
    owner: str  # "key_<16 hex>" for an API key (never the key itself), "ui:..." for UI users
    source: str  # "rest" | "ui"
    model: str
    params: dict[str, Any]  # ValidRequest.params(): what generate() gets besides the image
    payload: dict[str, Any]  # as echoed to the client (image abbreviated)
    input_path: str  # the stored input: image bytes, or the parent MP4 of an extension
    status: Status = Status.QUEUED
    progress: int = 0  # percent, 0-100
    progress_info: dict[str, Any] = field(default_factory=dict)  # the last Progress, as a dict
    attempts: int = 0  # runs that reached the first denoising step
    claims: int = 0  # times a worker took it
    cancel_requested: bool = False
    worker_id: str | None = None  # the worker that claimed it last (qworker_id)
    lease_until: float | None = None  # unix seconds (database clock); a processing job past it is reclaimed
    video_path: str | None = None
    thumbnail_path: str | None = None
    metadata_path: str | None = None
    preview_path: str | None = None  # the live preview (animated WEBP) while processing, else None
    final_prompt: str | None = None
    seed_used: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    est_seconds: float = 0.0  # the run plan's estimate at submit
    webhook: dict[str, Any] = field(default_factory=dict)  # {url, events, base} or {} = none
    batch_id: str | None = None  # the jobs of one submit with num_videos > 1 share it; None = alone
    last_image_path: str | None = None  # the stored end frame (issue 24), beside input_path
    created_at: float = field(default_factory=time.time)  # unix seconds
    updated_at: float = 0.0
    queued_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    # Not stored: why the stored row could not be read as written (set by jobs.records, shown by views)
    damage: str | None = field(default=None, metadata={"stored": False})

    @property
    def progress_report(self) -> Progress:
        known = {f.name for f in fields(Progress)}
        return Progress(**{k: v for k, v in self.progress_info.items() if k in known} or {"stage": "queued"})


Claim = tuple[str, int]  # (worker_id, claims) of one take: writes by a worker that lost its lease miss


def claim_of(job: Job) -> Claim:
    return (job.worker_id or "", job.claims)


@dataclass(frozen=True)
class WorkerRecord:
    """One row of the workers table: a worker process (or torchrun group) and what it runs."""

    worker_id: str
    info: dict[str, Any]  # EngineInfo as a dict (max_area, fast_available, cost, is_tiny, banner)
    started_at: float  # unix seconds
    seen_at: float  # last heartbeat, database clock
    age_s: float  # seconds since seen_at, database clock


@dataclass(frozen=True)
class Delivery:
    """One webhook event taken from the outbox for an attempt (jobs/store/sql_events.py)."""

    event_id: str  # the Standard Webhooks message id (webhook-id): the same on every retry
    request_id: str
    owner: str
    event: str  # one of WEBHOOK_EVENTS
    job: Job  # the job as it was when the event happened (the body is rendered from it)
    attempts: int  # attempts made before this one
    created_at: float  # unix seconds; retries stop IDEMPOTENCY_S (24 h) after it


COLUMNS = [f.name for f in fields(Job) if f.metadata.get("stored", True)]
JSON_COLUMNS = ("params", "payload", "progress_info", "webhook")


def progress_percent(progress: Progress) -> int:
    """0-100 for the store. Denoising is 2..97 %; encoding 98 %; only success reports 100 %."""
    if progress.stage == "denoise":
        return 2 + int(95 * progress.fraction)
    return {"queued": 0, "prompt": 1, "image": 2, "encode": 98, "done": 99}.get(progress.stage, 0)
