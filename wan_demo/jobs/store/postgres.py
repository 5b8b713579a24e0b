"""PostgreSQL job store: the queue and state of record shared by API nodes and worker processes.

psycopg 3 with a psycopg_pool connection pool (each pooled connection is checked before use, so a
restarted server costs one failed call at most, not a dead process). Workers claim jobs with
`FOR UPDATE SKIP LOCKED` (two workers never take the same row and never wait on each other) under
a lease on the database's clock; the queries shared with SQLite live in jobs/store/sql.py. A
database that cannot be reached raises StoreUnavailable (REST answers 503 with Retry-After).

The schema is created and migrated by the app at open(): MIGRATIONS[i] takes version i to i + 1,
recorded in `wan_demo_schema`, all under one advisory lock so nodes starting together migrate once.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from wan_demo.jobs.common import Job, Status, StoreUnavailable
from wan_demo.jobs.store.listener import Listener
from wan_demo.jobs.store.sql import SqlJobStore
from wan_demo.jobs.store.sql_events import NEXT_OWNER
from wan_demo.jobs.store.sql_ops import JOBS_CHANNEL, OUTBOX_CHANNEL

OPEN_TIMEOUT_S = 60.0  # open(): wait this long for the first connection (a database still starting)
LOCK_MIGRATE, LOCK_ADMIT = 7_761_001, 7_761_002  # pg advisory lock keys (any constant bigints)
LOCK_RATE = 7_761_003  # int4 class of the per-key rate-limit locks (the key's hashtext is the other half)
LOCK_BASE = 7_761_100  # exclusive(name): this + a stable number per name

MIGRATIONS = (
    # 0 -> 1: jobs and workers
    """
    CREATE TABLE requests (
        request_id TEXT PRIMARY KEY, seq BIGSERIAL, owner TEXT NOT NULL, source TEXT NOT NULL,
        model TEXT NOT NULL, params JSONB NOT NULL, payload JSONB NOT NULL, input_path TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'processing', 'success', 'failed', 'cancelled')),
        progress INTEGER NOT NULL DEFAULT 0, progress_info JSONB NOT NULL DEFAULT '{}',
        attempts INTEGER NOT NULL DEFAULT 0, claims INTEGER NOT NULL DEFAULT 0,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE, worker_id TEXT, lease_until DOUBLE PRECISION,
        video_path TEXT, thumbnail_path TEXT, metadata_path TEXT, final_prompt TEXT, seed_used BIGINT,
        error_code TEXT, error_message TEXT, est_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        queued_at DOUBLE PRECISION NOT NULL, started_at DOUBLE PRECISION, completed_at DOUBLE PRECISION
    );
    CREATE INDEX requests_queue ON requests (queued_at, seq) WHERE status = 'queued';
    CREATE INDEX requests_leases ON requests (lease_until) WHERE status = 'processing';
    CREATE INDEX requests_owner ON requests (owner, created_at);
    CREATE INDEX requests_finished ON requests (status, completed_at);
    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY, info JSONB NOT NULL, started_at DOUBLE PRECISION NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 1 -> 2: the live preview of a processing job (its storage location)
    """
    ALTER TABLE requests ADD COLUMN preview_path TEXT;
    """,
    # 2 -> 3: fair queueing (owners), webhooks (subscription column + outbox), idempotency keys
    """
    ALTER TABLE requests ADD COLUMN webhook JSONB NOT NULL DEFAULT '{}';
    CREATE INDEX requests_owner_queue ON requests (owner, queued_at, seq) WHERE status = 'queued';
    CREATE TABLE owners (
        owner TEXT PRIMARY KEY, last_served BIGINT NOT NULL DEFAULT 0,
        first_seen DOUBLE PRECISION NOT NULL, touched_at DOUBLE PRECISION NOT NULL
    );
    INSERT INTO owners (owner, last_served, first_seen, touched_at)
        SELECT owner, 0, MIN(created_at), MAX(created_at) FROM requests GROUP BY owner;
    CREATE INDEX owners_turn ON owners (last_served, first_seen, owner);
    CREATE TABLE webhook_events (
        seq BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, request_id TEXT NOT NULL,
        owner TEXT NOT NULL, event TEXT NOT NULL, snapshot JSONB NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0, created_at DOUBLE PRECISION NOT NULL,
        next_attempt_at DOUBLE PRECISION NOT NULL, last_attempt_at DOUBLE PRECISION, last_status INTEGER,
        last_error TEXT, delivered_at DOUBLE PRECISION
    );
    CREATE INDEX webhook_due ON webhook_events (next_attempt_at) WHERE state = 'pending';
    CREATE INDEX webhook_request ON webhook_events (request_id, seq);
    CREATE TABLE idempotency_keys (
        owner TEXT NOT NULL, key TEXT NOT NULL, body_hash TEXT NOT NULL, request_id TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (owner, key)
    );
    CREATE INDEX idempotency_age ON idempotency_keys (created_at);
    CREATE INDEX idempotency_request ON idempotency_keys (request_id);
    """,
    # 3 -> 4: the per-key submit rate limit shared by every API node (sql_ops.py)
    """
    CREATE TABLE rate_hits (key TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
    CREATE INDEX rate_hits_key ON rate_hits (key, at);
    CREATE INDEX rate_hits_at ON rate_hits (at);
    """,
    # 4 -> 5: batches (one submit, several jobs) and the stored end frame
    """
    ALTER TABLE requests ADD COLUMN batch_id TEXT;
    ALTER TABLE requests ADD COLUMN last_image_path TEXT;
    CREATE INDEX requests_batch ON requests (owner, batch_id) WHERE batch_id IS NOT NULL;
    """,
    # 5 -> 6: rate-limit hits held by a submit in flight (released if it queues nothing: sql_ops.py)
    """
    ALTER TABLE rate_hits ADD COLUMN hold TEXT;
    """,
)
# The pick rule: round-robin over owners (jobs/store/sql_events.py), that owner's oldest job first.
# The owner's row is locked too, so concurrent workers take different owners' jobs; SKIP LOCKED
# passes over rows another worker is claiming right now (nobody waits on anybody).
PICK_NEXT = (
    f"SELECT request_id FROM requests WHERE status = 'queued' AND owner = ({NEXT_OWNER} FOR UPDATE"
    " SKIP LOCKED) ORDER BY queued_at, seq LIMIT 1 FOR UPDATE SKIP LOCKED"
)


class _Connection:
    """A psycopg connection that takes the `?` placeholders of the shared SQL."""

    def __init__(self, conn: Any):
        self.conn = conn

    def execute(self, sql: str, args: Any = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), args)


class PostgresJobStore(SqlJobStore):
    NOW = "CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)"
    TIEBREAK = "seq"
    JSON_PARAM = "CAST(? AS JSONB)"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, pool_size: int = 8, timeout_s: float = 5.0):
        self.url, self.pool_size, self.timeout_s = url, pool_size, timeout_s
        self._pool: Any = None
        self._listener: Listener | None = None  # started by the first subscribe() (jobs/store/listener.py)
        self._init_ops()

    def open(self) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        pool = ConnectionPool(
            self.url, min_size=1, max_size=self.pool_size, timeout=self.timeout_s, open=False,
            check=ConnectionPool.check_connection, name="wan-demo-jobs",
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": math.ceil(self.timeout_s),
                    "application_name": "wan-demo"},
        )  # fmt: skip
        try:
            pool.open(wait=True, timeout=OPEN_TIMEOUT_S)
        except Exception as e:  # PoolTimeout: the server is not there (yet)
            pool.close()
            raise StoreUnavailable(f"cannot reach PostgreSQL at {_safe(self.url)}: {e}") from None
        self._pool = pool
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (LOCK_MIGRATE,))
            db.execute("CREATE TABLE IF NOT EXISTS wan_demo_schema (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM wan_demo_schema").fetchone()
            version = row["version"] if row else 0
            if row is None:
                db.execute("INSERT INTO wan_demo_schema (version) VALUES (0)")
            for script in MIGRATIONS[version:]:
                db.conn.execute(script)  # DDL is transactional in PostgreSQL: all steps or none
            db.execute("UPDATE wan_demo_schema SET version = ?", (len(MIGRATIONS),))

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def subscribe(self, subscriber) -> None:
        """Also start this process's LISTEN connection (one, however many subscribe)."""
        super().subscribe(subscriber)
        if self._listener is None:
            channels = (JOBS_CHANNEL, OUTBOX_CHANNEL)
            self._listener = Listener(self.url, channels, self._dispatch, self.timeout_s).start()

    @property
    def wakes_other_processes(self) -> bool:
        return self._listener is not None and self._listener.connected

    def _notify(self, db: Any, channel: str, payload: str = "") -> None:
        db.execute("SELECT pg_notify(?, ?)", (channel, payload))  # delivered at commit, once per payload

    def _lock_key(self, db: Any, key: str) -> None:
        # released at commit; two int4 halves: our class and the key's hash
        db.execute("SELECT pg_advisory_xact_lock(CAST(? AS INTEGER), hashtext(?))", (LOCK_RATE, key))

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[_Connection]:
        import psycopg
        from psycopg_pool import PoolTimeout

        if self._pool is None:
            raise RuntimeError("the job store is not open; call open() first")
        self.transactions += 1
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield _Connection(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as e:
            raise StoreUnavailable(f"the job database is unavailable ({type(e).__name__})") from e

    @contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """A session advisory lock on a connection of its own (not the pool's: the block uses the
        pool, which may have one connection); PostgreSQL releases it if this process dies."""
        import psycopg

        key = LOCK_BASE + zlib.crc32(name.encode()) % 1000
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=math.ceil(self.timeout_s))
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"the job database is unavailable ({type(e).__name__})") from e
        with conn:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                yield False
                return
            try:
                yield True
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                except psycopg.Error:  # the connection is gone: so is the lock
                    pass

    def _lock_admission(self, db: Any) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (LOCK_ADMIT,))  # released at commit

    def claim_next(self, worker_id: str, lease_s: float) -> Job | None:
        with self._tx() as db:
            row = db.execute(
                "UPDATE requests SET status = ?, claims = claims + 1, worker_id = ?, progress = 0,"
                f" progress_info = '{{}}', lease_until = {self.NOW} + ?, updated_at = ?"
                f" WHERE request_id = ({PICK_NEXT}) RETURNING *",
                (str(Status.PROCESSING), worker_id, lease_s, time.time()),
            ).fetchone()
            if row is not None:
                self._served(db, row["owner"])
                self._emit(db, row["request_id"], "processing")
        return self._job(row) if row is not None else None


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
