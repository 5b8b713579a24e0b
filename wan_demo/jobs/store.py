"""The job store interface: the queue and the state of record for every generation request.

Backends implement exactly these methods (jobs/store_sqlite.py is the embedded default). Every
write is one committed transaction, so a 2xx sent after a call returns is never lost. A store
opens nothing when constructed: `open()` connects and migrates the schema.
"""

from __future__ import annotations

from typing import Any, Protocol

from wan_demo.jobs.common import MAX_ATTEMPTS, Job, Status


class JobStore(Protocol):
    def open(self) -> None: ...
    def close(self) -> None: ...
    def add(self, job: Job) -> None: ...
    def get(self, request_id: str) -> Job | None: ...
    def list_jobs(
        self, owner: str, model: str | None, status: str | None, limit: int, offset: int
    ) -> tuple[list[Job], int]: ...
    def count(self, statuses: tuple[Status, ...], owner: str | None = None) -> int: ...
    def queue_ahead(self, job: Job) -> tuple[int, float]:
        """(queued jobs that run before `job`, their summed est_seconds)."""
        ...

    def running(self) -> list[Job]: ...
    def claim_next(self, worker_id: str) -> Job | None:
        """Atomically move the next queued job to processing (claims + 1) and return it."""
        ...

    def release(self, request_id: str) -> None:
        """Give a claimed job back to the queue (worker shutting down): not a claim, not an attempt."""
        ...

    def set_progress(
        self, request_id: str, percent: int, info: dict[str, Any], started: bool = False, ran: bool = False
    ) -> None:
        """`started`: the worker began (sets started_at); `ran`: the first denoising step finished,
        so this run counts as an attempt."""
        ...

    def finish(self, request_id: str, status: Status, **outcome: Any) -> None:
        """Record a terminal status; only a processing job can finish (terminal states never change)."""
        ...

    def cancel(self, request_id: str) -> Status | None:
        """Queued -> cancelled; processing -> cancel_requested. The status before, None if unknown."""
        ...

    def recover(self, max_attempts: int = MAX_ATTEMPTS) -> dict[str, int]:
        """At start-up: jobs left processing by a dead process are cancelled (if asked), failed with
        worker_lost (max_attempts real runs, or max_attempts x CLAIMS_PER_ATTEMPT claims), else requeued."""
        ...

    def finished_before(self, cutoff: float) -> list[Job]:
        """Terminal jobs completed before `cutoff` (unix seconds), for the clean-up sweeper."""
        ...

    def delete(self, request_ids: list[str]) -> int: ...
