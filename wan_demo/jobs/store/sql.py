"""The SQL both job store backends share (jobs/store/base.py is the interface).

Statements use `?` placeholders and portable SQL (SQLite >= 3.24 and PostgreSQL both run them);
the backends supply a transaction (`_tx`), the database clock (`NOW`), how JSON is written, the
tie-break column and the pick rule (`claim_next`). Times are unix seconds (float); lease times come
from the database's clock so workers on several machines agree on when a lease ran out.
"""

from __future__ import annotations

import time
from typing import Any

from wan_demo.jobs.common import (
    CLAIMS_PER_ATTEMPT,
    COLUMNS,
    JSON_COLUMNS,
    MAX_ATTEMPTS,
    TERMINAL,
    Claim,
    Job,
    QueueFull,
    Status,
    TooManyActive,
)
from wan_demo.jobs.store.records import clean, json_text, row_values, status_of
from wan_demo.jobs.store.sql_events import SqlEvents
from wan_demo.jobs.store.sql_ops import JOBS_CHANNEL, SqlOps

WORKER_FORGET_S = 24 * 3600.0  # worker rows unseen this long are deleted by recover()
# worker_lost says what happened, from the row's own counts: takes that never reached a denoising
# step (a crash loop while loading, encoding the prompt ...) vs runs that did (attempts)
LOST_MESSAGE = (
    "CASE WHEN attempts = 0 THEN 'a worker claimed this request ' || claims || ' times and stopped each"
    " time before the first denoising step' ELSE 'the worker stopped while running this request '"
    " || attempts || ' times' || CASE WHEN claims > attempts THEN ' (claimed ' || claims || ' times)'"
    " ELSE '' END END"
)


class SqlJobStore(SqlEvents, SqlOps):
    """Reads, owners, outbox and keys (SqlEvents) plus every write; backends add _tx, the clock, JSON
    casts and claim_next. A write that changes what a webhook reports queues its event in the same
    transaction (`_emit`): a committed status change never misses its delivery."""

    def _lock_admission(self, db: Any) -> None:
        """Serialise capacity check + insert across processes (SQLite's write lock already does)."""

    def claim_next(self, worker_id: str, lease_s: float) -> Job | None:
        raise NotImplementedError

    # -- writing -------------------------------------------------------------------------------
    def add(
        self, job: Job, queue_max: int | None = None, owner_max: int | None = None,
        idempotency: tuple[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.add_many([job], queue_max, owner_max, idempotency)

    def add_many(
        self, jobs: list[Job], queue_max: int | None = None, owner_max: int | None = None,
        idempotency: tuple[str, str] | None = None,
    ) -> None:  # fmt: skip
        """A batch (one owner): all of its jobs in one transaction, or none (capacity counts each)."""
        marks = ", ".join(self.JSON_PARAM if name in JSON_COLUMNS else "?" for name in COLUMNS)
        rows = []
        for job in jobs:
            job.updated_at = job.queued_at = job.created_at
            values = row_values(job)  # JSON serialised, text made encodable
            values["status"] = str(values["status"])
            rows.append(list(values.values()))
        with self._tx() as db:
            if queue_max is not None or owner_max is not None or idempotency is not None:
                self._lock_admission(db)
            if idempotency is not None:  # (key, body hash): a replay raises before anything is queued
                self._claim_key(db, jobs[0], *idempotency)
            if queue_max is not None or owner_max is not None:
                self._check_capacity(db, jobs[0].owner, queue_max, owner_max, len(jobs))
            for row in rows:
                db.execute(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({marks})", row)
            self._touch_owner(db, jobs[0].owner)
            self._notify(db, JOBS_CHANNEL, "queued")

    def _check_capacity(
        self, db: Any, owner: str, queue_max: int | None, owner_max: int | None, adding: int = 1
    ) -> None:
        """Room for `adding` more jobs: a batch that does not fit is refused whole."""
        batch = f" (this submit adds {adding})" if adding > 1 else ""
        if owner_max is not None:
            active = self._count(db, (Status.QUEUED, Status.PROCESSING), owner)
            if active + adding > owner_max:
                raise TooManyActive(f"this key has {active} active requests; the limit is {owner_max}{batch}")
        if queue_max is not None and (queued := self._count(db, (Status.QUEUED,))) + adding > queue_max:
            waiting = f"{queued} of {queue_max}" if adding > 1 else f"{queue_max}"
            raise QueueFull(f"{waiting} generations are waiting{batch}; try again later")

    @staticmethod
    def _held(claim: Claim | None) -> tuple[str, list[Any]]:
        """WHERE clause (and args) that keeps a write to the claim that still holds the job."""
        if claim is None:
            return "", []
        return " AND worker_id = ? AND claims = ?", [claim[0], claim[1]]

    def renew(self, request_id: str, claim: Claim, lease_s: float) -> Job | None:
        held, args = self._held(claim)
        with self._tx() as db:
            done = db.execute(
                f"UPDATE requests SET lease_until = {self.NOW} + ? WHERE request_id = ? AND status = ?{held}",
                [lease_s, request_id, str(Status.PROCESSING), *args],
            ).rowcount
            row = db.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        return self._job(row) if done and row is not None else None

    def release(self, request_id: str, claim: Claim | None = None) -> None:
        held, args = self._held(claim)
        with self._tx() as db:
            done = db.execute(
                "UPDATE requests SET status = ?, claims = CASE WHEN claims > 0 THEN claims - 1 ELSE 0 END,"
                " started_at = NULL, lease_until = NULL, progress = 0, progress_info = '{}',"
                f" preview_path = NULL, updated_at = ? WHERE request_id = ? AND status = ?{held}",
                [str(Status.QUEUED), time.time(), request_id, str(Status.PROCESSING), *args],
            ).rowcount
            if done:
                self._notify(db, JOBS_CHANNEL, "queued")

    def set_progress(
        self, request_id: str, percent: int, info: dict[str, Any], started: bool = False, ran: bool = False,
        claim: Claim | None = None, preview: str | None = None,
    ) -> None:  # fmt: skip
        now = time.time()
        start = ", started_at = COALESCE(started_at, ?)" if started else ""
        attempt = ", attempts = attempts + 1" if ran else ""
        shown = ", preview_path = ?" if preview else ""
        held, held_args = self._held(claim)
        args = [
            percent,
            json_text(info),
            now,
            *([now] if started else []),
            *([clean(preview)] if preview else []),
            request_id,
            str(Status.PROCESSING),
        ]
        with self._tx() as db:
            before = db.execute(
                "SELECT progress FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
            done = db.execute(
                f"UPDATE requests SET progress = ?, progress_info = {self.JSON_PARAM}, updated_at = ?"
                f"{start}{attempt}{shown} WHERE request_id = ? AND status = ?{held}",
                [*args, *held_args],
            ).rowcount
            if done:
                self._emit_progress(db, request_id, before, percent)

    def finish(self, request_id: str, status: Status, claim: Claim | None = None, **outcome: Any) -> bool:
        unknown = set(outcome) - set(COLUMNS)
        if status not in TERMINAL or unknown:
            raise ValueError(f"bad finish: {status} {sorted(unknown)}")
        now = time.time()
        values = {
            "status": str(status),
            "updated_at": now,
            "completed_at": now,
            "lease_until": None,
            "preview_path": None,  # a preview lives only while its job runs
            **outcome,
        }
        values = {k: clean(v) for k, v in values.items()}  # e.g. an error message quoting bad text
        if status == Status.SUCCESS:
            values["progress"] = 100
        sets = ", ".join(f"{k} = ?" for k in values)
        held, args = self._held(claim)
        with self._tx() as db:
            done = db.execute(
                f"UPDATE requests SET {sets} WHERE request_id = ? AND status = ?{held}",
                [*values.values(), request_id, str(Status.PROCESSING), *args],
            ).rowcount
            if done:
                self._emit(db, request_id, "completed")
            return bool(done)

    def cancel(self, request_id: str) -> Status | None:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status FROM requests WHERE request_id = ?", (request_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == Status.QUEUED:
                db.execute(
                    "UPDATE requests SET status = ?, cancel_requested = TRUE, updated_at = ?,"
                    " completed_at = ? WHERE request_id = ? AND status = ?",
                    (str(Status.CANCELLED), now, now, request_id, str(Status.QUEUED)),
                )
                self._emit(db, request_id, "completed")
            elif row["status"] == Status.PROCESSING:
                db.execute(
                    "UPDATE requests SET cancel_requested = TRUE, updated_at = ? WHERE request_id = ?",
                    (now, request_id),
                )
                self._notify(db, JOBS_CHANNEL, f"cancel:{request_id}")  # its worker stops at once
            return status_of(row["status"]) or Status.FAILED  # a damaged status is not cancellable

    def recover(self, max_attempts: int = MAX_ATTEMPTS, expired_only: bool = False) -> dict[str, int]:
        now = time.time()
        gone = f"status = ? AND lease_until < {self.NOW}" if expired_only else "status = ?"
        processing, max_claims = str(Status.PROCESSING), max_attempts * CLAIMS_PER_ATTEMPT
        with self._tx() as db:
            hooked = [  # jobs with a webhook that this call may finish: their `completed` events
                r["request_id"]
                for r in db.execute(
                    f"SELECT request_id FROM requests WHERE {gone} AND webhook <> '{{}}'", (processing,)
                ).fetchall()
            ]
            cancelled = db.execute(
                f"UPDATE requests SET status = ?, lease_until = NULL, updated_at = ?, completed_at = ?"
                f" WHERE {gone} AND cancel_requested = TRUE",
                (str(Status.CANCELLED), now, now, processing),
            ).rowcount
            failed = db.execute(
                f"UPDATE requests SET status = ?, error_code = 'worker_lost', error_message = {LOST_MESSAGE},"
                f" lease_until = NULL, updated_at = ?, completed_at = ?"
                f" WHERE {gone} AND (attempts >= ? OR claims >= ?)",
                (str(Status.FAILED), now, now, processing, max_attempts, max_claims),
            ).rowcount
            requeued = db.execute(
                "UPDATE requests SET status = ?, progress = 0, progress_info = '{}', started_at = NULL,"
                f" lease_until = NULL, preview_path = NULL, updated_at = ? WHERE {gone}",
                (str(Status.QUEUED), now, processing),
            ).rowcount
            for request_id in hooked:
                status = db.execute(
                    "SELECT status FROM requests WHERE request_id = ?", (request_id,)
                ).fetchone()
                if status is not None and status["status"] in TERMINAL:
                    self._emit(db, request_id, "completed")
            db.execute(f"DELETE FROM workers WHERE seen_at < {self.NOW} - ?", (WORKER_FORGET_S,))
            self._forget_owners(db)
            if requeued:
                self._notify(db, JOBS_CHANNEL, "queued")
        return {"requeued": requeued, "failed": failed, "cancelled": cancelled}

    def delete(self, request_ids: list[str]) -> int:
        """Forget requests, with their webhook events and the idempotency keys that point at them."""
        with self._tx() as db:
            for table in ("webhook_events", "idempotency_keys"):
                for rid in request_ids:
                    db.execute(f"DELETE FROM {table} WHERE request_id = ?", (rid,))
            return sum(
                db.execute("DELETE FROM requests WHERE request_id = ?", (rid,)).rowcount
                for rid in request_ids
            )
