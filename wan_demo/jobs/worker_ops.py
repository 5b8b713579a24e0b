"""The worker's operations half (a mixin of jobs.worker.Worker): graceful drain, wake-ups heard from
the job store, its state for /readyz, the speed-mode label and the progress gauge for /metrics.
It works on the Worker's own fields (store, engine, settings, metrics, _thread, _current, _draining,
_wake) and methods (stop, wake, interrupt, _retry); kept apart so worker.py stays about running jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable

from wan_demo.core.plan import resolve_mode
from wan_demo.jobs.heartbeat import Reporter
from wan_demo.jobs.store.sql_ops import JOBS_CHANNEL

log = logging.getLogger("wan_demo.jobs.worker")

HANDBACK_WAIT_S = 10.0  # drain: after the grace period, wait this long for the next step, then release


class WorkerOps:
    def drain(self, grace_s: float) -> None:
        """Graceful stop (SIGTERM): claim nothing more; the running job may finish within `grace_s`,
        else it goes back to the queue at once (at its next step, or released from here if no step
        comes within HANDBACK_WAIT_S: its claim then no longer holds, so the late run records nothing)."""
        self._draining.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(grace_s, 0.0))
        running = self._current
        if running is not None:
            log.info("drain: %s still running after %g s; handing it back", running.request_id, grace_s)
        self.stop(HANDBACK_WAIT_S)
        if self._thread is not None and self._thread.is_alive() and running is not None:
            with running.lock:  # not between an outcome write and its mark (jobs/heartbeat.record)
                running.lost = True  # whatever the thread does later is discarded
            self._retry(lambda: self.store.release(running.request_id, running.claim))
            self.metrics.handed_back.inc()
            self._thread = None  # left to end on its own (a daemon): nobody waits for it again

    def _heard(self, channel: str, payload: str) -> None:
        """A store notification (jobs/store/sql_ops.py): new work, or a cancel of the running job."""
        if channel in ("", JOBS_CHANNEL):
            if payload.startswith("cancel:"):
                self.interrupt(payload.removeprefix("cancel:"))
            else:
                self.wake()

    def state(self) -> str:
        """ "idle" | "busy" (its thread runs) | "stopped" (not started, stopped, or died)."""
        if self._thread is None or not self._thread.is_alive():
            return "stopped"
        return "busy" if self._current is not None else "idle"

    def _mode(self, params: dict) -> str:
        """The speed mode a job runs in (its request resolved as the plan does), for metric labels."""
        try:
            return resolve_mode(self.settings, params.get("speed_mode"), self.engine.fast_available).name
        except Exception:  # noqa: BLE001  # a damaged or refused request: no mode
            return "other"

    def _progress(self, reporter: Reporter) -> Callable:
        def report(progress) -> None:
            if progress.stage == "denoise":
                self.metrics.job_progress.set(progress.fraction)
            reporter(progress)

        return report
