"""SQL both job store backends share for operations: health, queue figures, the shared rate limit
and wake-ups (jobs/store/base.py is the interface).

- `ping` / `stats`: what /readyz and /metrics read (one short read transaction each).
- `rate_acquire` / `rate_window`: the moving-window rule of the `limits` library (a hit is allowed
  while fewer than `limit` hits of that key lie within the last `window_s` seconds), counted in the
  `rate_hits` table on the database's clock, one transaction per hit under a per-key lock, so every
  API node on the database shares one count (rest/limitstore.py adapts it to `limits`).
  `rate_release` takes back hits tagged with a `hold` (a submit that ends up queueing nothing).
- `_notify(db, channel, payload)`: called inside a writing transaction (a submit, a cancel, a new
  outbox row); subscribers hear it once that transaction commits. PostgreSQL: `pg_notify`, heard by
  every process's listener (jobs/store/listener.py); SQLite: the subscribers of this process only.
- `transactions`: how many transactions this store ran (the idle-load figure of bench/queue.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from wan_demo.jobs.store.sql_reads import SqlReads

JOBS_CHANNEL = "wan_demo_jobs"  # payload "queued" (a job can be claimed) or "cancel:<request_id>"
OUTBOX_CHANNEL = "wan_demo_outbox"  # a webhook event is due now
Subscriber = Callable[[str, str], None]  # (channel, payload); "" channel = "you may have missed some"


class SqlOps(SqlReads):
    def _init_ops(self) -> None:
        self.transactions = 0  # counted by the backends' _tx
        self._subscribers: list[Subscriber] = []
        self._subs_lock = threading.Lock()

    # -- health and figures ----------------------------------------------------------------------
    def ping(self) -> None:
        """One round trip to the database; StoreUnavailable when it cannot be reached."""
        self._rows("SELECT 1 AS ok")

    def stats(self) -> dict[str, Any]:
        """Jobs per status, the oldest queued job's age (database clock) and the webhook backlog."""
        with self._tx(write=False) as db:
            counts = {
                r["status"]: r["n"]
                for r in db.execute("SELECT status, COUNT(*) AS n FROM requests GROUP BY status").fetchall()
            }
            oldest = db.execute(
                f"SELECT {self.NOW} - MIN(queued_at) AS age FROM requests WHERE status = 'queued'"
            ).fetchone()["age"]
            backlog = db.execute(
                "SELECT COUNT(*) AS n FROM webhook_events WHERE state = 'pending'"
            ).fetchone()["n"]
        return {"jobs": counts, "oldest_queued_s": max(float(oldest or 0.0), 0.0), "outbox": backlog}

    # -- the shared moving-window rate limit -----------------------------------------------------
    def _lock_key(self, db: Any, key: str) -> None:
        """Serialise hits of one key across processes (SQLite's write lock already does)."""

    def rate_acquire(
        self, key: str, limit: int, window_s: float, amount: int = 1, hold: str | None = None
    ) -> bool:
        """Count `amount` hits of `key` if that keeps it within `limit` per `window_s`; else count none.
        `hold` tags the hits so `rate_release` can take them back (a submit in flight reserves its
        hits up front, so nodes racing on one key see each other's reservations)."""
        if amount > limit:
            return False
        with self._tx() as db:
            self._lock_key(db, key)
            db.execute(f"DELETE FROM rate_hits WHERE key = ? AND at < {self.NOW} - ?", (key, window_s))
            held = db.execute("SELECT COUNT(*) AS n FROM rate_hits WHERE key = ?", (key,)).fetchone()["n"]
            if held + amount > limit:
                return False
            for _ in range(amount):
                db.execute(f"INSERT INTO rate_hits (key, at, hold) VALUES (?, {self.NOW}, ?)", (key, hold))
            return True

    def rate_release(self, key: str, hold: str) -> None:
        """Take back the hits `rate_acquire` counted for `key` with this `hold` (none: a no-op)."""
        with self._tx() as db:
            db.execute("DELETE FROM rate_hits WHERE key = ? AND hold = ?", (key, hold))

    def rate_window(self, key: str, window_s: float) -> tuple[float, int]:
        """(time of the oldest hit in the window, hits in it), database clock; (now, 0) when empty."""
        with self._tx(write=False) as db:
            row = db.execute(
                "SELECT MIN(at) AS first, COUNT(*) AS n FROM rate_hits"
                f" WHERE key = ? AND at >= {self.NOW} - ?",
                (key, window_s),
            ).fetchone()
            if row["n"]:
                return float(row["first"]), int(row["n"])
            return float(db.execute(f"SELECT {self.NOW} AS now").fetchone()["now"]), 0

    def rate_clear(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM rate_hits WHERE key = ?", (key,))

    def _forget_hits(self, db: Any, cutoff: float) -> None:
        """Hits older than `cutoff` (unix seconds): keys nobody uses any more (the sweeper's rule)."""
        db.execute("DELETE FROM rate_hits WHERE at < ?", (cutoff,))

    # -- wake-ups --------------------------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber(channel, payload)` after each committed submit, requeue, cancel and new
        outbox row (and with channel "" when notifications may have been missed)."""
        with self._subs_lock:
            self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._subs_lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def _dispatch(self, channel: str, payload: str) -> None:
        with self._subs_lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber(channel, payload)

    @property
    def wakes_other_processes(self) -> bool:
        """True while other processes' writes wake this one (PostgreSQL with its listener up)."""
        return False

    def _notify(self, db: Any, channel: str, payload: str = "") -> None:
        raise NotImplementedError
