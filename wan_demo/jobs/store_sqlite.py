"""The REST request store: the source of truth for REST statuses, durable across crashes.

`RequestStore` is the interface; `SqliteStore` (WAL, synchronous=FULL, one file in data_dir) is the
embedded default. A server database can replace it by implementing the same methods. Every write
is one committed transaction, so a 2xx sent after a call returns is never lost.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

QUEUED, PROCESSING, SUCCESS, FAILED, CANCELLED = "queued", "processing", "success", "failed", "cancelled"
STATUSES = (QUEUED, PROCESSING, SUCCESS, FAILED, CANCELLED)
ACTIVE = (QUEUED, PROCESSING)
MAX_ATTEMPTS = 2  # a request found `processing` after a crash is requeued once, then failed


@dataclass
class StoredRequest:
    request_id: str
    owner: str  # key id of the API key that submitted it (never the key itself)
    model: str
    payload: dict[str, Any]  # as echoed to the client (image abbreviated)
    input_path: str  # the stored input image bytes
    status: str = QUEUED
    progress: int = 0  # percent, 0-100
    attempts: int = 0  # times a worker took it
    cancel_requested: bool = False
    worker_id: str | None = None
    video_path: str | None = None
    thumbnail_path: str | None = None
    final_prompt: str | None = None
    seed_used: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    created_at: float = field(default_factory=time.time)  # unix seconds
    updated_at: float = 0.0
    queued_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None


COLUMNS = [f.name for f in fields(StoredRequest)]


class RequestStore(Protocol):
    def add(self, rec: StoredRequest) -> None: ...
    def get(self, request_id: str) -> StoredRequest | None: ...
    def list_requests(
        self, owner: str, model: str | None, status: str | None, limit: int, offset: int
    ) -> tuple[list[StoredRequest], int]: ...
    def count(self, statuses: tuple[str, ...], owner: str | None = None) -> int: ...
    def queue_position(self, rec: StoredRequest) -> int: ...
    def claim_next(self, worker_id: str) -> StoredRequest | None: ...
    def release(self, request_id: str) -> None: ...
    def set_progress(self, request_id: str, progress: int, started: bool = False) -> None: ...
    def finish(self, request_id: str, status: str, **outcome: Any) -> None: ...
    def cancel(self, request_id: str) -> str | None: ...
    def recover(self, max_attempts: int = MAX_ATTEMPTS) -> dict[str, int]: ...
    def close(self) -> None: ...


SCHEMA = """
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
"""


class SqliteStore:
    """One connection guarded by a lock; each method is one transaction (BEGIN IMMEDIATE .. COMMIT)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
        self._db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _row(row: sqlite3.Row | None) -> StoredRequest | None:
        if row is None:
            return None
        values = dict(row)
        values["payload"] = json.loads(values["payload"])
        values["cancel_requested"] = bool(values["cancel_requested"])
        return StoredRequest(**values)

    def add(self, rec: StoredRequest) -> None:
        rec.updated_at = rec.queued_at = rec.created_at
        values = {name: getattr(rec, name) for name in COLUMNS}
        values["payload"] = json.dumps(rec.payload)
        marks = ", ".join("?" for _ in COLUMNS)
        with self._tx() as db:
            db.execute(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({marks})", list(values.values()))

    def get(self, request_id: str) -> StoredRequest | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        return self._row(row)

    def list_requests(
        self,
        owner: str,
        model: str | None = None,
        status: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> tuple[list[StoredRequest], int]:
        where, args = "owner = ?", [owner]
        if model is not None:
            where, args = where + " AND model = ?", [*args, model]
        if status is not None:
            where, args = where + " AND status = ?", [*args, status]
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM requests WHERE {where}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT * FROM requests WHERE {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [self._row(r) for r in rows], total

    def count(self, statuses: tuple[str, ...], owner: str | None = None) -> int:
        marks = ", ".join("?" for _ in statuses)
        sql, args = f"SELECT COUNT(*) FROM requests WHERE status IN ({marks})", list(statuses)
        if owner is not None:
            sql, args = sql + " AND owner = ?", [*args, owner]
        with self._lock:
            return self._db.execute(sql, args).fetchone()[0]

    def queue_position(self, rec: StoredRequest) -> int:
        """1-based place among queued requests (all owners), oldest first."""
        with self._lock:
            ahead = self._db.execute(
                "SELECT COUNT(*) FROM requests WHERE status = ? AND queued_at < ?", (QUEUED, rec.queued_at)
            ).fetchone()[0]
        return ahead + 1

    def claim_next(self, worker_id: str) -> StoredRequest | None:
        """Atomically move the oldest queued request to processing and return it."""
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM requests WHERE status = ? ORDER BY queued_at, rowid LIMIT 1", (QUEUED,)
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE requests SET status = ?, attempts = attempts + 1, worker_id = ?, progress = 0,"
                " updated_at = ? WHERE request_id = ?",
                (PROCESSING, worker_id, time.time(), row["request_id"]),
            )
            new = db.execute("SELECT * FROM requests WHERE request_id = ?", (row["request_id"],)).fetchone()
            return self._row(new)

    def release(self, request_id: str) -> None:
        """Give a claimed request back to the queue (worker full or shutting down): not an attempt."""
        with self._tx() as db:
            db.execute(
                "UPDATE requests SET status = ?, attempts = MAX(attempts - 1, 0), started_at = NULL,"
                " progress = 0, updated_at = ? WHERE request_id = ? AND status = ?",
                (QUEUED, time.time(), request_id, PROCESSING),
            )

    def set_progress(self, request_id: str, progress: int, started: bool = False) -> None:
        now = time.time()
        start = ", started_at = COALESCE(started_at, ?)" if started else ""
        args = [progress, now, *([now] if started else []), request_id, PROCESSING]
        with self._tx() as db:
            db.execute(
                f"UPDATE requests SET progress = ?, updated_at = ?{start}"
                " WHERE request_id = ? AND status = ?",
                args,
            )

    def finish(self, request_id: str, status: str, **outcome: Any) -> None:
        """Record a terminal status. Only a processing request can finish: terminal states never change."""
        unknown = set(outcome) - set(COLUMNS)
        if status not in (SUCCESS, FAILED, CANCELLED) or unknown:
            raise ValueError(f"bad finish: {status} {sorted(unknown)}")
        now = time.time()
        values = {"status": status, "updated_at": now, "completed_at": now, **outcome}
        if status == SUCCESS:
            values["progress"] = 100
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._tx() as db:
            db.execute(
                f"UPDATE requests SET {sets} WHERE request_id = ? AND status = ?",
                [*values.values(), request_id, PROCESSING],
            )

    def cancel(self, request_id: str) -> str | None:
        """Queued -> cancelled at once; processing -> cancel_requested (the dispatcher stops it).
        Returns the status found before the call, or None for an unknown id."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status FROM requests WHERE request_id = ?", (request_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == QUEUED:
                db.execute(
                    "UPDATE requests SET status = ?, cancel_requested = 1, updated_at = ?, completed_at = ?"
                    " WHERE request_id = ?",
                    (CANCELLED, now, now, request_id),
                )
            elif row["status"] == PROCESSING:
                db.execute(
                    "UPDATE requests SET cancel_requested = 1, updated_at = ? WHERE request_id = ?",
                    (now, request_id),
                )
            return row["status"]

    def recover(self, max_attempts: int = MAX_ATTEMPTS) -> dict[str, int]:
        """At start-up: requests left `processing` by a dead process are requeued (once), cancelled if
        the user asked for it, or failed with `worker_lost` after `max_attempts` tries."""
        now = time.time()
        with self._tx() as db:
            cancelled = db.execute(
                "UPDATE requests SET status = ?, updated_at = ?, completed_at = ? WHERE status = ?"
                " AND cancel_requested = 1",
                (CANCELLED, now, now, PROCESSING),
            ).rowcount
            failed = db.execute(
                "UPDATE requests SET status = ?, error_code = 'worker_lost', error_message = ?,"
                " updated_at = ?, completed_at = ? WHERE status = ? AND attempts >= ?",
                (
                    FAILED,
                    f"the server stopped during this request {max_attempts} times",
                    now,
                    now,
                    PROCESSING,
                    max_attempts,
                ),
            ).rowcount
            requeued = db.execute(
                "UPDATE requests SET status = ?, progress = 0, started_at = NULL, updated_at = ?"
                " WHERE status = ?",
                (QUEUED, now, PROCESSING),
            ).rowcount
        return {"requeued": requeued, "failed": failed, "cancelled": cancelled}

    def close(self) -> None:
        with self._lock:
            self._db.close()
