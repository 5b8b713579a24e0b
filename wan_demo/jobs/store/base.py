"""The job store interface: the queue and the state of record for every generation request.

Two backends implement exactly these methods: SQLite (jobs/store/sqlite.py, the embedded default)
and PostgreSQL (jobs/store/postgres.py, for several API and worker processes on several machines).
Their shared SQL lives in jobs/store/sql.py; each backend owns its connection handling, its
migrations and its pick rule (`claim_next`). Every write is one committed transaction, so a 2xx sent
after a call returns is never lost. A store opens nothing when constructed: `open()` connects and
migrates the schema. A backend that cannot reach its database raises `StoreUnavailable`.

Webhooks: a job whose `webhook` subscribes to an event gets an outbox row in the same transaction
as the write that caused it (claim: processing; progress crossing a tenth: progress; finish,
cancel of a queued job, recovery that ends it: completed); deliverers claim rows from the outbox.

Leases: a worker claims a job under a lease (`lease_s` seconds, on the database's clock) and renews
it while the job runs; a job whose lease ran out is reclaimed by `recover(expired_only=True)` with the
same rule as crash recovery (requeued, or failed with worker_lost). Writes that pass a `claim`
(worker id + claim count) only land while that claim still holds the job, so a worker that lost
its lease can never overwrite the run that took over.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from wan_demo.core.settings import Settings
from wan_demo.jobs.common import MAX_ATTEMPTS, Claim, Delivery, Job, Status, WorkerRecord

SQLITE_FILE = "requests.sqlite3"  # in Settings.data_dir


class JobStore(Protocol):
    def open(self) -> None: ...
    def close(self) -> None: ...
    def add(
        self, job: Job, queue_max: int | None = None, owner_max: int | None = None,
        idempotency: tuple[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Insert a queued job. With limits, the capacity check and the insert are one transaction
        across every process on the database: QueueFull / TooManyActive (per `job.owner`).
        `idempotency` = (key, body hash): a key this owner used within 24 h raises IdempotentReplay
        and queues nothing; otherwise the key is stored in the same transaction as the job."""
        ...

    def add_many(
        self, jobs: list[Job], queue_max: int | None = None, owner_max: int | None = None,
        idempotency: tuple[str, str] | None = None,
    ) -> None:  # fmt: skip
        """`add` for the jobs of one submit (one owner; a batch): every job or none, and the limits
        count each job, so a batch that does not fit is refused whole. The key points at jobs[0]."""
        ...

    def idempotent(self, owner: str, key: str) -> tuple[str, str] | None:
        """(request_id, body hash) of this owner's key used within the last 24 h, or None."""
        ...

    def forget_keys(self, cutoff: float, limit: int | None = None) -> int: ...

    def get(self, request_id: str) -> Job | None: ...
    def list_jobs(
        self, owner: str, model: str | None, status: str | None, limit: int, offset: int,
        batch_id: str | None = None,
    ) -> tuple[list[Job], int]: ...  # fmt: skip
    def count(self, statuses: tuple[Status, ...], owner: str | None = None) -> int: ...
    def queue_ahead(self, job: Job) -> tuple[int, float]:
        """(queued jobs that run before `job` under the pick rule, their summed est_seconds)."""
        ...

    def running(self) -> list[Job]: ...
    def claim_next(self, worker_id: str, lease_s: float) -> Job | None:
        """Atomically move the next queued job to processing (claims + 1, lease) and return it.
        The pick is round-robin over owners: the owner served longest ago (never = first) among
        those with queued jobs, then that owner's oldest job."""
        ...

    def renew(self, request_id: str, claim: Claim, lease_s: float) -> Job | None:
        """Extend the lease of a job this claim still holds; None when it no longer holds it."""
        ...

    def release(self, request_id: str, claim: Claim | None = None) -> None:
        """Give a claimed job back to the queue (worker shutting down): not a claim, not an attempt."""
        ...

    def set_progress(
        self, request_id: str, percent: int, info: dict[str, Any], started: bool = False, ran: bool = False,
        claim: Claim | None = None, preview: str | None = None,
    ) -> None:  # fmt: skip
        """`started`: the worker began (sets started_at); `ran`: the first denoising step finished,
        so this run counts as an attempt; `preview`: the storage location of the latest live preview
        (preview_path; cleared again by release, recover and finish)."""
        ...

    def finish(self, request_id: str, status: Status, claim: Claim | None = None, **outcome: Any) -> bool:
        """Record a terminal status (and clear preview_path); only a processing job can finish
        (terminal states never change). True when this call finished it."""
        ...

    def cancel(self, request_id: str) -> Status | None:
        """Queued -> cancelled; processing -> cancel_requested. The status before, None if unknown."""
        ...

    def recover(self, max_attempts: int = MAX_ATTEMPTS, expired_only: bool = False) -> dict[str, int]:
        """Jobs whose worker is gone: every processing job (a lone process starting up), or only
        those whose lease ran out (`expired_only`). Cancelled if asked, failed with worker_lost
        (max_attempts real runs, or max_attempts x CLAIMS_PER_ATTEMPT claims), else requeued."""
        ...

    def finished_before(self, cutoff: float, limit: int | None = None) -> list[Job]:
        """Terminal jobs completed before `cutoff` (unix seconds), oldest first, at most `limit`, for
        the clean-up sweeper."""
        ...

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        """Held by one process at a time on this database while the block runs: yields True for the
        holder, False at once (no waiting) when another process holds it. PostgreSQL: a session
        advisory lock on its own connection; SQLite: an flock on a file beside the database. Either
        is released when its holder dies."""
        ...

    def delete(self, request_ids: list[str]) -> int: ...
    def beat_worker(self, worker_id: str, info: dict[str, Any]) -> None:
        """A worker says it is alive and what it runs (EngineInfo as a dict), for API nodes."""
        ...

    def workers(self) -> list[WorkerRecord]:
        """Known workers, most recently seen first, with their age on the database's clock."""
        ...

    # Operations (jobs/store/sql_ops.py): health, figures, the shared rate limit, wake-ups.
    transactions: int  # transactions run so far (idle-load figure)
    wakes_other_processes: bool  # other processes' writes wake this one right now (LISTEN is up)

    def ping(self) -> None: ...
    def stats(self) -> dict[str, Any]:
        """{"jobs": {status: count}, "oldest_queued_s": age, "outbox": pending webhook events}."""
        ...

    def rate_acquire(
        self, key: str, limit: int, window_s: float, amount: int = 1, hold: str | None = None
    ) -> bool: ...
    def rate_release(self, key: str, hold: str) -> None: ...
    def rate_window(self, key: str, window_s: float) -> tuple[float, int]: ...
    def rate_clear(self, key: str) -> None: ...
    def subscribe(self, subscriber: Callable[[str, str], None]) -> None:
        """Hear (channel, payload) after each committed submit/requeue, cancel, new outbox row."""
        ...

    def unsubscribe(self, subscriber: Callable[[str, str], None]) -> None: ...

    # Webhook outbox: events are queued by the writes above, in their own transactions.
    def claim_delivery(self, lease_s: float) -> Delivery | None: ...
    def record_delivery(
        self, event_id: str, status: int | None, error: str | None, retry_in: float | None
    ) -> None: ...
    def webhook_state(self, request_id: str) -> dict[str, Any]: ...


def make_store(settings: Settings) -> JobStore:
    """The backend `Settings.database_url` names: "" = SQLite in data_dir, postgresql://... = Postgres."""
    url = settings.database_url
    if not url:
        from wan_demo.jobs.store.sqlite import SqliteJobStore

        return SqliteJobStore(Path(settings.data_dir) / SQLITE_FILE)
    if url.startswith(("postgresql://", "postgres://")):
        from wan_demo.jobs.store.postgres import PostgresJobStore

        return PostgresJobStore(url, settings.database_pool_size, settings.database_timeout_s)
    raise ValueError(f"database_url must be empty (SQLite) or postgresql://...; got {url.split(':')[0]!r}")
