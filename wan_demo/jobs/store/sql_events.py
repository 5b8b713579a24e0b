"""SQL both job store backends share for fair queueing, webhooks and idempotency keys.

- owners: one row per job owner (API key id, UI user): `last_served` is a serve counter (0 = never
  served), so the pick rule takes the owner served longest ago among owners with queued jobs, then
  that owner's oldest job (PICK_NEXT in each backend). `queue_ahead` simulates the same rule.
- webhook_events: the outbox. A job with a webhook gets one row per subscribed event, written in the
  same transaction as the status change it reports, holding the job row as it was then (the body is
  rendered from that snapshot). Deliverers claim due rows, oldest event of a request first.
- idempotency_keys: (owner, key) -> the request it created and a hash of the body that created it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from wan_demo.jobs.common import IDEMPOTENCY_S, Delivery, IdempotentReplay, Job, Status
from wan_demo.jobs.store.records import job_from_row, json_text
from wan_demo.jobs.store.sql_ops import OUTBOX_CHANNEL
from wan_demo.jobs.store.sql_reads import SqlReads

OWNER_FORGET_S = 24 * 3600.0  # owners idle (nothing queued, untouched) this long are forgotten
PROGRESS_STEP = 10  # a `progress` event every time the percentage crosses a multiple of this

# Pick the owner served longest ago that has queued jobs (never served = 0 comes first; ties: the
# owner first seen, then by name); each probe is an index lookup, so the cost follows the number
# of owners ahead in that order, not the queue length.
NEXT_OWNER = (
    "SELECT o.owner FROM owners o WHERE EXISTS (SELECT 1 FROM requests q WHERE q.owner = o.owner"
    " AND q.status = 'queued') ORDER BY o.last_served, o.first_seen, o.owner LIMIT 1"
)


class SqlEvents(SqlReads):
    SKIP_LOCKED = ""  # PostgreSQL: " FOR UPDATE SKIP LOCKED" (SQLite serialises writers anyway)

    # -- owners (fair queueing) ------------------------------------------------------------------
    def _touch_owner(self, db: Any, owner: str) -> None:
        """On every add: the owner's row exists (never served = 0) and counts as recently active."""
        now = time.time()
        db.execute(
            "INSERT INTO owners (owner, last_served, first_seen, touched_at) VALUES (?, 0, ?, ?)"
            " ON CONFLICT (owner) DO UPDATE SET touched_at = excluded.touched_at",
            (owner, now, now),
        )

    def _served(self, db: Any, owner: str) -> None:
        """After a claim: this owner was served last (its turn comes again after every other owner)."""
        db.execute(
            "UPDATE owners SET last_served = (SELECT COALESCE(MAX(last_served), 0) + 1 FROM owners),"
            " touched_at = ? WHERE owner = ?",
            (time.time(), owner),
        )

    def _forget_owners(self, db: Any) -> None:
        db.execute(
            "DELETE FROM owners WHERE touched_at < ? AND NOT EXISTS (SELECT 1 FROM requests q"
            " WHERE q.owner = owners.owner AND q.status = 'queued')",
            (time.time() - OWNER_FORGET_S,),
        )

    def queue_ahead(self, job: Job) -> tuple[int, float]:
        """Queued jobs that the round-robin rule runs before `job`, and their estimated seconds.
        With k of its owner's jobs ahead of it, `job` runs in round k; every other owner P with n_P
        jobs runs min(n_P, k) of them before it, plus one more if P's turn comes before its owner's.
        Seconds of other owners' jobs are counted at their owner's average estimate."""
        with self._tx(write=False) as db:
            mine = db.execute(
                "SELECT COUNT(*) AS n, COALESCE(SUM(est_seconds), 0) AS s FROM requests"
                " WHERE owner = ? AND status = ? AND queued_at < ?",
                (job.owner, str(Status.QUEUED), job.queued_at),
            ).fetchone()
            lanes = db.execute(
                "SELECT q.owner AS owner, COUNT(*) AS n, SUM(q.est_seconds) AS s,"
                " COALESCE(MAX(o.last_served), 0) AS served, COALESCE(MAX(o.first_seen), 0) AS seen"
                " FROM requests q LEFT JOIN owners o ON o.owner = q.owner WHERE q.status = ?"
                " GROUP BY q.owner",
                (str(Status.QUEUED),),
            ).fetchall()
        k, seconds = mine["n"], float(mine["s"])
        turn = {r["owner"]: (r["served"], r["seen"], r["owner"]) for r in lanes}
        own_turn = turn.get(job.owner) or self._turn_of(job.owner)
        ahead = k
        for r in lanes:
            if r["owner"] == job.owner:
                continue
            m = min(r["n"], k + (1 if turn[r["owner"]] < own_turn else 0))
            ahead += m
            seconds += float(r["s"]) / r["n"] * m
        return ahead, seconds

    def _turn_of(self, owner: str) -> tuple[int, float, str]:
        rows = self._rows("SELECT last_served, first_seen FROM owners WHERE owner = ?", (owner,))
        return (rows[0]["last_served"], rows[0]["first_seen"], owner) if rows else (0, time.time(), owner)

    # -- webhook outbox --------------------------------------------------------------------------
    def _emit(self, db: Any, request_id: str, event: str) -> None:
        """Queue `event` for the job's webhook, in the caller's transaction, if it subscribed."""
        row = db.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        if row is None:
            return
        job = job_from_row(row)
        if not job.webhook.get("url") or event not in job.webhook.get("events", ()):
            return
        db.execute(
            "INSERT INTO webhook_events (event_id, request_id, owner, event, snapshot, created_at,"
            f" next_attempt_at) VALUES (?, ?, ?, ?, {self.JSON_PARAM}, ?, {self.NOW})",
            (f"msg_{uuid.uuid4().hex}", request_id, job.owner, event, json_text(dict(row)), time.time()),
        )
        self._notify(db, OUTBOX_CHANNEL)  # deliverers wake at commit (sql_ops.py)

    def _emit_progress(self, db: Any, request_id: str, before: Any, percent: int) -> None:
        """A `progress` event each time the percentage crosses a multiple of PROGRESS_STEP."""
        if before is not None and percent // PROGRESS_STEP > (before["progress"] or 0) // PROGRESS_STEP:
            self._emit(db, request_id, "progress")

    def claim_delivery(self, lease_s: float) -> Delivery | None:
        """Take the next due event (per request, the oldest undelivered first) for one attempt; it
        is due again after `lease_s` if the deliverer dies mid-attempt (at-least-once)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM webhook_events e WHERE e.state = 'pending' AND e.next_attempt_at <= "
                f"{self.NOW} AND NOT EXISTS (SELECT 1 FROM webhook_events p WHERE p.request_id ="
                " e.request_id AND p.state = 'pending' AND p.seq < e.seq) ORDER BY e.next_attempt_at"
                f" LIMIT 1{self.SKIP_LOCKED}"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                f"UPDATE webhook_events SET next_attempt_at = {self.NOW} + ? WHERE seq = ?",
                (lease_s, row["seq"]),
            )
        snapshot = row["snapshot"]
        job = job_from_row(json.loads(snapshot) if isinstance(snapshot, str) else snapshot)
        return Delivery(
            row["event_id"], row["request_id"], row["owner"], row["event"], job, row["attempts"],
            row["created_at"],
        )  # fmt: skip

    def record_delivery(
        self, event_id: str, status: int | None, error: str | None, retry_in: float | None
    ) -> None:
        """One attempt's outcome: delivered (no error), retried in `retry_in` s, or given up (None)."""
        state = "delivered" if error is None else ("pending" if retry_in is not None else "failed")
        with self._tx() as db:
            db.execute(
                f"UPDATE webhook_events SET state = ?, attempts = attempts + 1, last_status = ?,"
                f" last_error = ?, last_attempt_at = {self.NOW}, next_attempt_at = {self.NOW} + ?,"
                f" delivered_at = CASE WHEN ? THEN {self.NOW} ELSE NULL END WHERE event_id = ?",
                (state, status, error, retry_in or 0.0, error is None, event_id),
            )

    def webhook_state(self, request_id: str) -> dict[str, Any]:
        """Delivery state of a request's events: attempts, last status/error, next attempt, counts."""
        with self._tx(write=False) as db:
            agg = db.execute(
                "SELECT COUNT(*) AS n, COALESCE(SUM(attempts), 0) AS attempts,"
                " SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) AS pending,"
                " SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END) AS delivered,"
                " SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS failed"
                " FROM webhook_events WHERE request_id = ?",
                (request_id,),
            ).fetchone()
            head = db.execute(  # events go out in order: the oldest pending one is attempted next
                "SELECT next_attempt_at FROM webhook_events WHERE request_id = ? AND state = 'pending'"
                " ORDER BY seq LIMIT 1",
                (request_id,),
            ).fetchone()
            last = db.execute(
                "SELECT last_status, last_error, event FROM webhook_events WHERE request_id = ?"
                " AND last_attempt_at IS NOT NULL ORDER BY last_attempt_at DESC LIMIT 1",
                (request_id,),
            ).fetchone()
        return {
            "last_status": last["last_status"] if last else None,
            "last_error": last["last_error"] if last else None,
            "last_event": last["event"] if last else None,
            "attempts": agg["attempts"],
            "next_attempt_at": head["next_attempt_at"] if head else None,
            "pending": agg["pending"] or 0,
            "delivered": agg["delivered"] or 0,
            "failed": agg["failed"] or 0,
        }

    # -- idempotency keys ------------------------------------------------------------------------
    def idempotent(self, owner: str, key: str) -> tuple[str, str] | None:
        """(request_id, body hash) stored for this owner's key within the last 24 h, or None."""
        rows = self._rows(
            "SELECT request_id, body_hash FROM idempotency_keys"
            " WHERE owner = ? AND key = ? AND created_at >= ?",
            (owner, key, time.time() - IDEMPOTENCY_S),
        )
        return (rows[0]["request_id"], rows[0]["body_hash"]) if rows else None

    def _claim_key(self, db: Any, job: Job, key: str, body_hash: str) -> None:
        """In the insert's transaction (under the admission lock): a key used within 24 h raises
        IdempotentReplay (nothing is inserted); otherwise it now points at `job`."""
        cutoff = time.time() - IDEMPOTENCY_S
        db.execute(
            "DELETE FROM idempotency_keys WHERE owner = ? AND key = ? AND created_at < ?",
            (job.owner, key, cutoff),
        )
        row = db.execute(
            "SELECT request_id, body_hash FROM idempotency_keys WHERE owner = ? AND key = ?", (job.owner, key)
        ).fetchone()
        if row is not None:
            raise IdempotentReplay(row["request_id"], row["body_hash"] == body_hash)
        db.execute(
            "INSERT INTO idempotency_keys (owner, key, body_hash, request_id, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (job.owner, key, body_hash, job.request_id, job.created_at),
        )

    def forget_keys(self, cutoff: float, limit: int | None = None) -> int:
        """Delete idempotency keys created before `cutoff` (unix seconds), at most `limit` of them
        (the oldest first); the sweeper's 24 h rule."""
        if limit is None:
            sql, args = "DELETE FROM idempotency_keys WHERE created_at < ?", (cutoff,)
        else:
            sql = (
                "DELETE FROM idempotency_keys WHERE (owner, key) IN (SELECT owner, key FROM"
                " idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?)"
            )
            args = (cutoff, limit)
        with self._tx() as db:
            self._forget_hits(db, cutoff)  # rate-limit hits of keys idle since then (sql_ops.py)
            return db.execute(sql, args).rowcount
