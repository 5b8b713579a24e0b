"""The reading half of the SQL both job store backends share (see jobs/store/sql.py): jobs by id,
per owner, counts, queue position, and the workers table. `?` placeholders, portable SQL."""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from typing import Any

from wan_demo.jobs.common import TERMINAL, Job, Status, WorkerRecord
from wan_demo.jobs.store.records import job_from_row, json_text


class SqlReads:
    NOW = ""  # SQL expression: the database clock in unix seconds
    TIEBREAK = ""  # column that orders rows inserted in the same instant
    JSON_PARAM = "?"  # placeholder for a JSON text value (Postgres casts it to jsonb)

    def _tx(self, write: bool = True) -> AbstractContextManager[Any]:
        """One transaction; yields an object with execute(sql, args) -> cursor."""
        raise NotImplementedError

    def _rows(self, sql: str, args: Any = ()) -> list[Any]:
        with self._tx(write=False) as db:
            return db.execute(sql, args).fetchall()

    @staticmethod
    def _job(row: Any) -> Job:
        return job_from_row(row)  # never raises: a damaged row comes back flagged (Job.damage)

    def get(self, request_id: str) -> Job | None:
        rows = self._rows("SELECT * FROM requests WHERE request_id = ?", (request_id,))
        return self._job(rows[0]) if rows else None

    def list_jobs(
        self,
        owner: str,
        model: str | None = None,
        status: str | None = None,
        limit: int = 20,
        offset: int = 0,
        batch_id: str | None = None,
    ) -> tuple[list[Job], int]:
        where, args = "owner = ?", [owner]
        if batch_id is not None:
            where, args = where + " AND batch_id = ?", [*args, batch_id]
        if model is not None:
            where, args = where + " AND model = ?", [*args, model]
        if status is not None:
            where, args = where + " AND status = ?", [*args, str(status)]
        order = f"created_at DESC, {self.TIEBREAK} DESC"
        with self._tx(write=False) as db:
            total = db.execute(f"SELECT COUNT(*) AS n FROM requests WHERE {where}", args).fetchone()["n"]
            rows = db.execute(
                f"SELECT * FROM requests WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [self._job(r) for r in rows], total

    def count(self, statuses: tuple[Status, ...], owner: str | None = None) -> int:
        with self._tx(write=False) as db:
            return self._count(db, statuses, owner)

    @staticmethod
    def _count(db: Any, statuses: tuple[Status, ...], owner: str | None = None) -> int:
        marks = ", ".join("?" for _ in statuses)
        sql, args = (
            f"SELECT COUNT(*) AS n FROM requests WHERE status IN ({marks})",
            [str(s) for s in statuses],
        )
        if owner is not None:
            sql, args = sql + " AND owner = ?", [*args, owner]
        return db.execute(sql, args).fetchone()["n"]

    def running(self) -> list[Job]:
        return [
            self._job(r)
            for r in self._rows("SELECT * FROM requests WHERE status = ?", (str(Status.PROCESSING),))
        ]

    def finished_before(self, cutoff: float, limit: int | None = None) -> list[Job]:
        marks = ", ".join("?" for _ in TERMINAL)
        rows = self._rows(
            f"SELECT * FROM requests WHERE status IN ({marks}) AND completed_at < ?"
            f" ORDER BY completed_at{' LIMIT ?' if limit is not None else ''}",
            [*map(str, TERMINAL), cutoff, *([limit] if limit is not None else [])],
        )
        return [self._job(r) for r in rows]

    # -- workers -------------------------------------------------------------------------------
    def beat_worker(self, worker_id: str, info: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO workers (worker_id, info, started_at, seen_at)"
                f" VALUES (?, {self.JSON_PARAM}, ?, {self.NOW})"
                " ON CONFLICT (worker_id) DO UPDATE SET info = excluded.info, seen_at = excluded.seen_at",
                (worker_id, json_text(info), time.time()),
            )

    def workers(self) -> list[WorkerRecord]:
        rows = self._rows(
            f"SELECT *, {self.NOW} - seen_at AS age_s FROM workers ORDER BY seen_at DESC LIMIT 100"
        )
        return [
            WorkerRecord(
                r["worker_id"],
                json.loads(r["info"]) if isinstance(r["info"], str) else r["info"],
                r["started_at"],
                r["seen_at"],
                float(r["age_s"]),
            )  # fmt: skip
            for r in rows
        ]
