"""The generation worker: one thread that owns the model and runs one job at a time.

It claims the next job from the store (the one queue shared by the UI, the Gradio API and REST),
runs generate(), mirrors progress into the store and records the outcome. The store stays the
source of truth: a crash at any point leaves a row that `store.recover` repairs at start-up. When
idle it runs the clean-up sweeper (jobs.cleanup).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from wan_demo.core.plan import calibrate
from wan_demo.core.request import (
    GenerationCancelled,
    GenerationResult,
    InvalidRequest,
    Progress,
    ValidRequest,
)
from wan_demo.core.settings import Settings
from wan_demo.generate import generate
from wan_demo.jobs import cleanup
from wan_demo.jobs.common import Job, Status, progress_percent
from wan_demo.jobs.store import JobStore
from wan_demo.media.image import load_stored
from wan_demo.model.engine import Engine

log = logging.getLogger(__name__)

POLL_S = 0.25  # idle: how often the store is checked for new jobs (a submit in-process wakes at once)
PROGRESS_EVERY_S = 0.5  # progress writes are fsynced commits: at most this often per job
SWEEP_EVERY_S = 600.0  # clean-up cadence while idle

RunFn = Callable[..., GenerationResult]  # generate(), or a wrapper with its signature (ZeroGPU)


class Worker:
    def __init__(
        self, store: JobStore, engine: Engine, settings: Settings, run: RunFn | None = None,
        worker_id: str | None = None,
    ):  # fmt: skip
        self.store, self.engine, self.settings, self.run = store, engine, settings, run or generate
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._current: tuple[str, threading.Event] | None = None
        self._thread: threading.Thread | None = None
        self._next_sweep = 0.0

    def start(self) -> Worker:
        self._thread = threading.Thread(target=self._loop, name="generation-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the running step; an interrupted job goes back to the queue."""
        self._stopping.set()
        self._wake.set()
        current = self._current
        if current is not None:
            current[1].set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    def interrupt(self, request_id: str) -> None:
        """Stop the running job at its next denoising step (the store already says cancel)."""
        current = self._current
        if current is not None and current[0] == request_id:
            current[1].set()

    @property
    def busy(self) -> bool:
        return self._current is not None

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                job = self.store.claim_next(self.worker_id)
                if job is None:
                    self._sweep_when_due()
            except Exception:  # a store hiccup must not end the worker
                log.exception("job store unavailable; retrying")
                job = None
            if job is None:
                self._wake.wait(POLL_S)
                continue
            try:
                self._run(job)
            except Exception:  # never let one job kill the worker
                log.exception("running %s failed", job.request_id)
                self.store.finish(
                    job.request_id, Status.FAILED, error_code="internal", error_message="worker error"
                )
            finally:
                self._current = None

    def _run(self, job: Job) -> None:
        if job.damage:  # its stored parameters cannot be trusted: refuse it rather than guess
            why = f"the stored request cannot be read ({job.damage})"
            self.store.finish(job.request_id, Status.FAILED, error_code="damaged_record", error_message=why)
            return
        try:
            request = ValidRequest.restore(job.params, load_stored(Path(job.input_path).read_bytes()))
        except (InvalidRequest, OSError) as e:
            self.store.finish(job.request_id, Status.FAILED, error_code="invalid_input", error_message=str(e))
            return
        stop = threading.Event()
        self._current = (job.request_id, stop)
        reporter = _Reporter(self.store, job.request_id, stop)
        settings = self.settings.replace(output_dir=output_dir(self.settings, job.source))
        try:
            result = self.run(request, self.engine, settings, reporter, stop)
        except GenerationCancelled:
            if self._stopping.is_set() and not reporter.user_cancelled():
                self.store.release(job.request_id)  # server shutting down: run it after the restart
            else:
                self.store.finish(job.request_id, Status.CANCELLED)
            return
        except Exception as e:  # noqa: BLE001  # recorded on the job; the worker goes on
            code = "invalid_input" if isinstance(e, InvalidRequest) else "generation_failed"
            if code != "invalid_input":
                log.exception("generation %s failed", job.request_id)
            self.store.finish(job.request_id, Status.FAILED, error_code=code, error_message=str(e)[:500])
            return
        self.store.finish(
            job.request_id, Status.SUCCESS, video_path=str(result.video_path),
            thumbnail_path=str(result.thumbnail_path), metadata_path=str(result.metadata_path),
            final_prompt=result.final_prompt, seed_used=result.seed_used,
        )  # fmt: skip
        self.engine.cost = calibrate(self.engine.cost, result)

    def _sweep_when_due(self) -> None:
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY_S
            removed = cleanup.sweep(self.store, self.settings, now)
            if any(removed.values()):
                log.info("clean-up: %s", removed)


def output_dir(settings: Settings, source: str) -> Path:
    """Outputs per source: the UI's folder is the only one Gradio may serve; REST outputs are
    reachable only through the authenticated REST routes."""
    return Path(settings.output_dir) / ("ui" if source == "ui" else "rest")


class _Reporter:
    """The progress callback: throttled writes into the store, and a look at the cancel flag
    (set by a cancel in another process) whenever it writes. The first denoising step makes the
    run count as an attempt (a crash before it does not use one up)."""

    def __init__(self, store: JobStore, request_id: str, stop: threading.Event):
        self.store, self.request_id, self.stop = store, request_id, stop
        self._last = 0.0
        self._started = self._ran = False

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        first, ran = not self._started, progress.stage == "denoise" and not self._ran
        if not (first or ran) and progress.stage == "denoise" and now - self._last < PROGRESS_EVERY_S:
            return
        self._started, self._ran, self._last = True, self._ran or ran, now
        percent, info = progress_percent(progress), progress.as_dict()
        self.store.set_progress(self.request_id, percent, info, started=first, ran=ran)
        if self.user_cancelled():
            self.stop.set()

    def user_cancelled(self) -> bool:
        job = self.store.get(self.request_id)
        return job is None or job.cancel_requested
