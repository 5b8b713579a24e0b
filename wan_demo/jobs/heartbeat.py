"""A worker's heartbeat thread, its progress reporter and the outcome write: how a running job stays
claimed, and how a run that lost it records nothing.

Every `lease_s / 3` seconds the heartbeat publishes the worker (the workers table: alive, and what
it runs) and renews the running job's lease. It stops the run when the job was cancelled from any
node, or when the lease was lost (the job was reclaimed and may already run elsewhere). While the
database is down it retries every second; generation goes on.

A lost run records nothing: no progress, no preview, no outputs, no outcome. The renewal and the
outcome write (`record`) take the run's lock, so they happen in one order and the log tells it:
once the outcome is recorded the lease is no longer renewed (a finished job has none), and once the
lease is known lost no outcome is written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wan_demo.core.request import Progress
from wan_demo.jobs.common import Claim, Status, StoreUnavailable, progress_percent
from wan_demo.jobs.store.base import JobStore

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5  # progress writes are fsynced commits: at most this often per job
RETRY_S = 1.0  # heartbeat retry while the database is unreachable
DOWN_SKIP_S = 5.0  # after a failed progress write, skip writes this long (each may wait for the pool)


@dataclass
class Running:
    """The job a worker runs right now."""

    request_id: str
    claim: Claim
    stop: threading.Event = field(default_factory=threading.Event)
    lost: bool = False  # the lease was lost: the run must record nothing
    cancelled: bool = False  # a user asked to cancel (on any node)
    recorded: bool = False  # the outcome is written: nothing left to renew
    lock: threading.Lock = field(default_factory=threading.Lock)  # renewal vs outcome write


class Heartbeat:
    def __init__(
        self, store: JobStore, worker_id: str, lease_s: float, info: Callable[[], dict[str, Any]],
        current: Callable[[], Running | None],
    ):  # fmt: skip
        self.store, self.worker_id, self.lease_s, self.info, self.current = (
            store,
            worker_id,
            lease_s,
            info,
            current,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._loop, name="worker-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def beat(self) -> bool:
        """Publish the worker and renew the running job's lease once; False if the store is down."""
        try:
            self.store.beat_worker(self.worker_id, self.info())
            running = self.current()
            if running is not None:
                self._renew(running)
        except StoreUnavailable as e:
            log.warning("heartbeat: %s", e)
            return False
        return True

    def _renew(self, running: Running) -> None:
        with running.lock:  # never between an outcome write and its `recorded` mark
            if running.lost or running.recorded:
                return
            job = self.store.renew(running.request_id, running.claim, self.lease_s)
            if job is None:
                running.lost = True
                log.warning("lost the lease on %s (claim %d): it may run elsewhere now; stopping this run, "
                            "which records nothing", running.request_id, running.claim[1])  # fmt: skip
                running.stop.set()
            elif job.cancel_requested:
                running.cancelled = True
                running.stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ok = self.beat()
            self._stop.wait(self.lease_s / 3 if ok else min(RETRY_S, self.lease_s / 3))


class Reporter:
    """The progress callback: throttled writes into the store, and a look at the cancel flag
    (set by a cancel in another process) whenever it writes. The first denoising step makes the
    run count as an attempt (a crash before it does not use one up). A live preview (generate()
    sends one at most every Settings.preview_every_s) goes to storage through `preview`, and its
    location into the row with the progress. Progress is best effort: a database outage skips
    writes, never the generation."""

    def __init__(self, store: JobStore, running: Running, preview: Callable[[Any], str | None] | None = None):
        self.store, self.running, self.preview = store, running, preview
        self._last = self._down_until = 0.0
        self._started = self._ran = False

    def __call__(self, progress: Progress) -> None:
        if self.running.lost:  # the job may run elsewhere: its progress and previews are not ours
            return
        now = time.monotonic()
        first, ran = not self._started, progress.stage == "denoise" and not self._ran
        shown = progress.preview is not None and self.preview is not None
        if (
            not (first or ran or shown)
            and progress.stage == "denoise"
            and now - self._last < PROGRESS_EVERY_S
        ):
            return
        if now < self._down_until:
            return
        percent, info = progress_percent(progress), progress.as_dict()
        location = self.preview(progress.preview) if shown else None  # type: ignore[misc]
        r = self.running
        try:
            self.store.set_progress(
                r.request_id, percent, info, started=first, ran=ran, claim=r.claim, preview=location
            )
        except StoreUnavailable:  # not marked as written: started / ran are sent again next time
            self._down_until = now + DOWN_SKIP_S
            return
        self._started, self._ran, self._last = True, self._ran or ran, now
        if self.user_cancelled():
            r.cancelled = True
            r.stop.set()

    def user_cancelled(self) -> bool:
        try:
            job = self.store.get(self.running.request_id)
        except StoreUnavailable:
            return False
        return job is None or job.cancel_requested


def record(
    store: JobStore, running: Running, status: Status, stopping: threading.Event, **outcome: Any
) -> bool:
    """Write the run's outcome under its claim, waiting out a database restart (until `stopping`).
    True when it landed; False, logged, when the run lost its lease (before, or as the write found
    the job reclaimed) or the worker stops with the database down."""
    rid = running.request_id
    while True:
        with running.lock:
            if running.lost:
                log.warning("%s: outcome %s not recorded: this run lost its lease", rid, status)
                return False
            try:
                done = store.finish(rid, status, running.claim, **outcome)
            except StoreUnavailable as e:
                down = e
            else:
                running.recorded, running.lost = done, not done
                if done:
                    log.info("%s: %s recorded (claim %d)", rid, status, running.claim[1])
                else:
                    log.warning("%s: outcome %s not recorded: the job was taken over (its lease ran out) "
                                "or deleted before it landed", rid, status)  # fmt: skip
                return done
        if stopping.is_set():
            log.warning("%s: stopping with the database down (%s); the lease will run out", rid, down)
            return False
        time.sleep(RETRY_S)
