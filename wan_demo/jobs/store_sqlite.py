"""SQLite job store: one file in data_dir, WAL with synchronous=FULL (fsync on every commit).

One connection guarded by a lock; each method is one transaction. The schema is versioned with
PRAGMA user_version and migrated forward at open() (MIGRATIONS[i] takes version i to i + 1).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wan_demo.jobs.common import CLAIMS_PER_ATTEMPT, COLUMNS, MAX_ATTEMPTS, TERMINAL, Job, Status
from wan_demo.jobs.records import clean, job_from_row, json_text, read_text, row_values, status_of

MIGRATIONS = (
    # 0 -> 1: the REST request table of the first landing
    """
    CREATE TABLE IF NOT EXISTS requests (
        request_id TEXT PRIMARY KEY, owner TEXT NOT NULL, model TEXT NOT NULL, payload TEXT NOT NULL,
        input_path TEXT NOT NULL, status TEXT NOT NULL, progress INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,
        worker_id TEXT, video_path TEXT, thumbnail_path TEXT, final_prompt TEXT, seed_used INTEGER,
        error_code TEXT, error_message TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
        queued_at REAL NOT NULL, started_at REAL, completed_at REAL
    );
    CREATE INDEX IF NOT EXISTS requests_queue ON requests (status, queued_at);
    CREATE INDEX IF NOT EXISTS requests_owner ON requests (owner, created_at);
    """,
    # 1 -> 2: UI jobs share the table; validated params kept apart from the client's echo
    """
    ALTER TABLE requests ADD COLUMN source TEXT NOT NULL DEFAULT 'rest';
    ALTER TABLE requests ADD COLUMN params TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE requests ADD COLUMN progress_info TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE requests ADD COLUMN metadata_path TEXT;
    ALTER TABLE requests ADD COLUMN est_seconds REAL NOT NULL DEFAULT 0;
    UPDATE requests SET params = json_object(
        'prompt', json_extract(payload, '$.prompt'),
        'video_length_s', json_extract(payload, '$.video_length'),
        'seed', json_extract(payload, '$.seed'),
        'prompt_extend', json(CASE WHEN json_extract(payload, '$.prompt_extend') THEN 'true' ELSE 'false' END)
    );
    CREATE INDEX IF NOT EXISTS requests_finished ON requests (status, completed_at);
    """,
    # 2 -> 3: attempts count runs that reached denoising; claims count every take by a worker
    """
    ALTER TABLE requests ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
    UPDATE requests SET claims = attempts;
    """,
)


class SqliteJobStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        db.row_factory = sqlite3.Row
        db.text_factory = read_text  # a damaged row is read, flagged and shown; it never breaks a query
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            db.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {target}; COMMIT;")
        self._db = db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the job store is not open; call open() first")
        return self._db

    def _read(self, sql: str, args: Any = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn().execute(sql, args).fetchall()

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return job_from_row(row)

    def add(self, job: Job) -> None:
        job.updated_at = job.queued_at = job.created_at
        values = row_values(job)
        marks = ", ".join("?" for _ in COLUMNS)
        with self._tx() as db:
            db.execute(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({marks})", list(values.values()))

    def get(self, request_id: str) -> Job | None:
        rows = self._read("SELECT * FROM requests WHERE request_id = ?", (request_id,))
        return self._job(rows[0]) if rows else None

    def list_jobs(
        self,
        owner: str,
        model: str | None = None,
        status: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        where, args = "owner = ?", [owner]
        if model is not None:
            where, args = where + " AND model = ?", [*args, model]
        if status is not None:
            where, args = where + " AND status = ?", [*args, status]
        with self._lock:
            db = self._conn()
            total = db.execute(f"SELECT COUNT(*) FROM requests WHERE {where}", args).fetchone()[0]
            rows = db.execute(
                f"SELECT * FROM requests WHERE {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [self._job(r) for r in rows], total

    def count(self, statuses: tuple[Status, ...], owner: str | None = None) -> int:
        marks = ", ".join("?" for _ in statuses)
        sql, args = f"SELECT COUNT(*) FROM requests WHERE status IN ({marks})", [str(s) for s in statuses]
        if owner is not None:
            sql, args = sql + " AND owner = ?", [*args, owner]
        return self._read(sql, args)[0][0]

    def queue_ahead(self, job: Job) -> tuple[int, float]:
        row = self._read(
            "SELECT COUNT(*), COALESCE(SUM(est_seconds), 0) FROM requests WHERE status = ? AND queued_at < ?",
            (Status.QUEUED, job.queued_at),
        )[0]
        return row[0], row[1]

    def running(self) -> list[Job]:
        return [
            self._job(r) for r in self._read("SELECT * FROM requests WHERE status = ?", (Status.PROCESSING,))
        ]

    def claim_next(self, worker_id: str) -> Job | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT request_id FROM requests WHERE status = ? ORDER BY queued_at, rowid LIMIT 1",
                (Status.QUEUED,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE requests SET status = ?, claims = claims + 1, worker_id = ?, progress = 0,"
                " progress_info = '{}', updated_at = ? WHERE request_id = ?",
                (Status.PROCESSING, worker_id, time.time(), row["request_id"]),
            )
            new = db.execute("SELECT * FROM requests WHERE request_id = ?", (row["request_id"],)).fetchone()
            return self._job(new)

    def release(self, request_id: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE requests SET status = ?, claims = MAX(claims - 1, 0), started_at = NULL,"
                " progress = 0, progress_info = '{}', updated_at = ? WHERE request_id = ? AND status = ?",
                (Status.QUEUED, time.time(), request_id, Status.PROCESSING),
            )

    def set_progress(
        self, request_id: str, percent: int, info: dict[str, Any], started: bool = False, ran: bool = False
    ) -> None:
        now = time.time()
        start = ", started_at = COALESCE(started_at, ?)" if started else ""
        attempt = ", attempts = attempts + 1" if ran else ""
        args = [percent, json_text(info), now, *([now] if started else []), request_id, Status.PROCESSING]
        with self._tx() as db:
            db.execute(
                f"UPDATE requests SET progress = ?, progress_info = ?, updated_at = ?{start}{attempt}"
                " WHERE request_id = ? AND status = ?",
                args,
            )

    def finish(self, request_id: str, status: Status, **outcome: Any) -> None:
        unknown = set(outcome) - set(COLUMNS)
        if status not in TERMINAL or unknown:
            raise ValueError(f"bad finish: {status} {sorted(unknown)}")
        now = time.time()
        values = {"status": status, "updated_at": now, "completed_at": now, **outcome}
        values = {k: clean(v) for k, v in values.items()}  # e.g. an error message quoting bad text
        if status == Status.SUCCESS:
            values["progress"] = 100
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._tx() as db:
            db.execute(
                f"UPDATE requests SET {sets} WHERE request_id = ? AND status = ?",
                [*values.values(), request_id, Status.PROCESSING],
            )

    def cancel(self, request_id: str) -> Status | None:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status FROM requests WHERE request_id = ?", (request_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == Status.QUEUED:
                db.execute(
                    "UPDATE requests SET status = ?, cancel_requested = 1, updated_at = ?, completed_at = ?"
                    " WHERE request_id = ?",
                    (Status.CANCELLED, now, now, request_id),
                )
            elif row["status"] == Status.PROCESSING:
                db.execute(
                    "UPDATE requests SET cancel_requested = 1, updated_at = ? WHERE request_id = ?",
                    (now, request_id),
                )
            return status_of(row["status"]) or Status.FAILED  # a damaged status is not cancellable

    def recover(self, max_attempts: int = MAX_ATTEMPTS) -> dict[str, int]:
        now = time.time()
        message = f"the server stopped while running this request {max_attempts} times"
        max_claims = max_attempts * CLAIMS_PER_ATTEMPT
        with self._tx() as db:
            cancelled = db.execute(
                "UPDATE requests SET status = ?, updated_at = ?, completed_at = ? WHERE status = ?"
                " AND cancel_requested = 1",
                (Status.CANCELLED, now, now, Status.PROCESSING),
            ).rowcount
            failed = db.execute(
                "UPDATE requests SET status = ?, error_code = 'worker_lost', error_message = ?,"
                " updated_at = ?, completed_at = ? WHERE status = ? AND (attempts >= ? OR claims >= ?)",
                (Status.FAILED, message, now, now, Status.PROCESSING, max_attempts, max_claims),
            ).rowcount
            requeued = db.execute(
                "UPDATE requests SET status = ?, progress = 0, progress_info = '{}', started_at = NULL,"
                " updated_at = ? WHERE status = ?",
                (Status.QUEUED, now, Status.PROCESSING),
            ).rowcount
        return {"requeued": requeued, "failed": failed, "cancelled": cancelled}

    def finished_before(self, cutoff: float) -> list[Job]:
        marks = ", ".join("?" for _ in TERMINAL)
        rows = self._read(
            f"SELECT * FROM requests WHERE status IN ({marks}) AND completed_at < ?", [*TERMINAL, cutoff]
        )
        return [self._job(r) for r in rows]

    def delete(self, request_ids: list[str]) -> int:
        with self._tx() as db:
            return sum(
                db.execute("DELETE FROM requests WHERE request_id = ?", (rid,)).rowcount
                for rid in request_ids
            )
