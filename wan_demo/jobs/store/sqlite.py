"""SQLite job store: one file in data_dir, WAL with synchronous=FULL (fsync on every commit).

The embedded default: one machine, one or several processes on the same file (BEGIN IMMEDIATE
serialises writers across processes). One connection per store guarded by a lock; each method is
one transaction; the queries are jobs/store/sql.py's. The schema is versioned with PRAGMA
user_version and migrated forward at open() (MIGRATIONS[i] takes version i to i + 1).
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wan_demo.jobs.common import Job, Status
from wan_demo.jobs.store.records import read_text
from wan_demo.jobs.store.sql import SqlJobStore
from wan_demo.jobs.store.sql_events import NEXT_OWNER

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
    # 3 -> 4: leases (several worker processes) and the workers table (API nodes read engine info)
    """
    ALTER TABLE requests ADD COLUMN lease_until REAL;
    CREATE TABLE IF NOT EXISTS workers (
        worker_id TEXT PRIMARY KEY, info TEXT NOT NULL, started_at REAL NOT NULL, seen_at REAL NOT NULL
    );
    """,
    # 4 -> 5: the live preview of a processing job (its storage location)
    """
    ALTER TABLE requests ADD COLUMN preview_path TEXT;
    """,
    # 5 -> 6: fair queueing (owners), webhooks (subscription column + outbox), idempotency keys
    """
    ALTER TABLE requests ADD COLUMN webhook TEXT NOT NULL DEFAULT '{}';
    CREATE INDEX IF NOT EXISTS requests_owner_queue ON requests (owner, queued_at) WHERE status = 'queued';
    CREATE TABLE IF NOT EXISTS owners (
        owner TEXT PRIMARY KEY, last_served INTEGER NOT NULL DEFAULT 0, first_seen REAL NOT NULL,
        touched_at REAL NOT NULL
    );
    INSERT OR IGNORE INTO owners (owner, last_served, first_seen, touched_at)
        SELECT owner, 0, MIN(created_at), MAX(created_at) FROM requests GROUP BY owner;
    CREATE INDEX IF NOT EXISTS owners_turn ON owners (last_served, first_seen, owner);
    CREATE TABLE IF NOT EXISTS webhook_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, request_id TEXT NOT NULL,
        owner TEXT NOT NULL, event TEXT NOT NULL, snapshot TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, next_attempt_at REAL NOT NULL,
        last_attempt_at REAL, last_status INTEGER, last_error TEXT, delivered_at REAL
    );
    CREATE INDEX IF NOT EXISTS webhook_due ON webhook_events (next_attempt_at) WHERE state = 'pending';
    CREATE INDEX IF NOT EXISTS webhook_request ON webhook_events (request_id, seq);
    CREATE TABLE IF NOT EXISTS idempotency_keys (
        owner TEXT NOT NULL, key TEXT NOT NULL, body_hash TEXT NOT NULL, request_id TEXT NOT NULL,
        created_at REAL NOT NULL, PRIMARY KEY (owner, key)
    );
    CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency_keys (created_at);
    CREATE INDEX IF NOT EXISTS idempotency_request ON idempotency_keys (request_id)
    """,
    # 6 -> 7: the per-key submit rate limit shared by every process on the file (sql_ops.py)
    """
    CREATE TABLE IF NOT EXISTS rate_hits (key TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS rate_hits_key ON rate_hits (key, at);
    CREATE INDEX IF NOT EXISTS rate_hits_at ON rate_hits (at)
    """,
    # 7 -> 8: batches (one submit, several jobs) and the stored end frame
    """
    ALTER TABLE requests ADD COLUMN batch_id TEXT;
    ALTER TABLE requests ADD COLUMN last_image_path TEXT;
    CREATE INDEX IF NOT EXISTS requests_batch ON requests (owner, batch_id) WHERE batch_id IS NOT NULL
    """,
    # 8 -> 9: rate-limit hits held by a submit in flight (released if it queues nothing: sql_ops.py)
    """
    ALTER TABLE rate_hits ADD COLUMN hold TEXT
    """,
)
# The pick rule: round-robin over owners (jobs/store/sql_events.py), that owner's oldest job first.
PICK_NEXT = (
    f"SELECT request_id FROM requests WHERE status = 'queued' AND owner = ({NEXT_OWNER})"
    " ORDER BY queued_at, rowid LIMIT 1"
)


def migrate(db: sqlite3.Connection) -> None:
    """Apply the missing migrations, one transaction each; the version is re-read under the write
    lock, so processes starting together on one file never apply a step twice."""
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version < len(MIGRATIONS):
                for statement in filter(str.strip, MIGRATIONS[version].split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if version >= len(MIGRATIONS):
            return


class SqliteJobStore(SqlJobStore):
    NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # unix seconds, millisecond resolution
    TIEBREAK = "rowid"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, str]] = []  # notifications of the open transaction
        self._init_ops()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        db.row_factory = sqlite3.Row
        db.text_factory = read_text  # a damaged row is read, flagged and shown; it never breaks a query
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
        migrate(db)
        self._db = db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise RuntimeError("the job store is not open; call open() first")
            db = self._db
            self.transactions += 1
            if not write:  # a single SELECT statement sees one WAL snapshot
                yield db
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                self._pending.clear()
                raise
            db.execute("COMMIT")
            pending, self._pending = self._pending, []
        for channel, payload in dict.fromkeys(pending):  # after commit, outside the lock
            self._dispatch(channel, payload)

    def _notify(self, db: sqlite3.Connection, channel: str, payload: str = "") -> None:
        """In-process wake-ups only: other processes on the same file find new work by polling."""
        self._pending.append((channel, payload))

    @contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """An flock on `<database>.<name>.lock`: one holder across the processes on this file."""
        lock = self.path.with_name(f"{self.path.name}.{name}.lock")
        with open(lock, "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def claim_next(self, worker_id: str, lease_s: float) -> Job | None:
        with self._tx() as db:
            row = db.execute(PICK_NEXT).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE requests SET status = ?, claims = claims + 1, worker_id = ?, progress = 0,"
                f" progress_info = '{{}}', lease_until = {self.NOW} + ?, updated_at = ? WHERE request_id = ?",
                (str(Status.PROCESSING), worker_id, lease_s, time.time(), row["request_id"]),
            )
            job = self._job(
                db.execute("SELECT * FROM requests WHERE request_id = ?", (row["request_id"],)).fetchone()
            )
            self._served(db, job.owner)
            self._emit(db, job.request_id, "processing")
            return job
