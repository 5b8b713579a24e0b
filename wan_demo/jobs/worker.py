"""The generation worker: one thread that owns the model and runs one job at a time.

It claims the next job from the store (the one queue shared by the UI, the Gradio API and REST,
and by every worker process on the same database) under a lease that jobs/heartbeat.py renews,
runs generate(), mirrors progress and live previews (jobs/previews.py) into the store, moves the
outputs into storage and records the outcome. The store stays the source of truth: a crash at any
point leaves a row whose lease runs out, and `store.recover` repairs it (requeued once, then
worker_lost). Between jobs it reclaims expired leases. (The clean-up sweeper has a timer of its own:
jobs/cleanup.py.)
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
from wan_demo.core.request import GenerationCancelled, GenerationResult, InvalidRequest, ValidRequest
from wan_demo.core.settings import Settings
from wan_demo.jobs.common import Job, Status, StoreUnavailable, claim_of
from wan_demo.jobs.directory import info_dict
from wan_demo.jobs.heartbeat import Heartbeat, Reporter, Running, record
from wan_demo.jobs.logs import job_context
from wan_demo.jobs.metrics import Metrics
from wan_demo.jobs.previews import PreviewSink
from wan_demo.jobs.storage.base import Storage, make_storage
from wan_demo.jobs.storage.common import write_durably
from wan_demo.jobs.store.base import JobStore
from wan_demo.jobs.worker_ops import WorkerOps
from wan_demo.media.clip import last_frame
from wan_demo.media.image import load_stored
from wan_demo.model.engine import Engine

log = logging.getLogger(__name__)

POLL_S = 0.25  # idle: how often the store is checked for new jobs (a submit in-process wakes at once)
SAFETY_POLL_S = 5.0  # the same while LISTEN/NOTIFY wakes this worker (only a safety net then)
RECLAIM_EVERY_S = 2.0  # how often an idle worker looks for jobs whose lease ran out (at least; lease_s / 6)
RECORD_RETRY_S = 1.0  # a release is retried this often while the database is down

RunFn = Callable[..., GenerationResult]  # generate(), or a wrapper with its signature (ZeroGPU)


class Worker(WorkerOps):
    def __init__(
        self, store: JobStore, engine: Engine, settings: Settings, run: RunFn | None = None,
        worker_id: str | None = None, storage: Storage | None = None, metrics: Metrics | None = None,
    ):  # fmt: skip
        self.store, self.engine, self.settings, self.run = store, engine, settings, run or _generate
        self.metrics = metrics or Metrics()
        self.storage = storage or make_storage(settings)
        self.worker_id = worker_id or settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._draining = threading.Event()  # claim nothing more; the loop ends after the running job
        self._current: Running | None = None
        self._thread: threading.Thread | None = None
        self._next_reclaim = 0.0
        self._down_logged = False
        info = lambda: info_dict(self.engine.plan_info())  # noqa: E731  # re-read: the cost model learns
        self.heartbeat = Heartbeat(store, self.worker_id, settings.lease_s, info, lambda: self._current)

    def start(self) -> Worker:
        self.storage.open()  # idempotent; a storage shared with the JobService is simply re-checked
        self.heartbeat.beat()  # visible to API nodes before the first job
        self.store.subscribe(self._heard)  # submits, requeues and cancels from any process wake it
        self.heartbeat.start()
        self._thread = threading.Thread(target=self._loop, name="generation-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the running step; an interrupted job goes back to the queue."""
        self._stopping.set()
        self._wake.set()
        current = self._current
        if current is not None:
            current.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.store.unsubscribe(self._heard)
        self.heartbeat.stop()

    def wake(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    def interrupt(self, request_id: str) -> None:
        """Stop the running job at its next denoising step (the store already says cancel)."""
        current = self._current
        if current is not None and current.request_id == request_id:
            current.cancelled = True
            current.stop.set()

    @property
    def busy(self) -> bool:
        return self._current is not None

    def _loop(self) -> None:
        while not self._stopping.is_set() and not self._draining.is_set():
            self._wake.clear()
            try:
                self._reclaim_when_due()
                job = self.store.claim_next(self.worker_id, self.settings.lease_s)
                self._down_logged = False
            except StoreUnavailable as e:  # the database restarts: wait for it, quietly
                if not self._down_logged:
                    log.warning("job store unavailable, retrying: %s", e)
                self._down_logged, job = True, None
            except Exception:  # a store hiccup must not end the worker
                log.exception("job store error; retrying")
                job = None
            if job is None:
                self._wake.wait(SAFETY_POLL_S if self.store.wakes_other_processes else POLL_S)
                continue
            try:
                with job_context(job.request_id, job.owner):
                    self._run(job)
            except Exception:  # never let one job kill the worker
                log.exception("running %s failed", job.request_id)
                self._record(job, Status.FAILED, error_code="internal", error_message="worker error")
            finally:
                self._current = None
                self.metrics.running(False)

    def _run(self, job: Job) -> None:
        log.info("running %s (claim %d) on %s", job.request_id, job.claims, self.worker_id)
        self.metrics.running(True)
        self.metrics.queue_wait.observe(max(job.updated_at - job.queued_at, 0.0))  # submit -> claim
        running = self._current = Running(job.request_id, claim_of(job))  # renewed from here on
        if job.damage:  # its stored parameters cannot be trusted: refuse it rather than guess
            why = f"the stored request cannot be read ({job.damage})"
            self._record(job, Status.FAILED, error_code="damaged_record", error_message=why)
            return
        settings = self.settings.replace(output_dir=output_dir(self.settings, job.source))
        try:
            request, scratch = self._restore(job, Path(settings.output_dir))
        except (InvalidRequest, OSError) as e:
            self._record(job, Status.FAILED, error_code="invalid_input", error_message=str(e))
            return
        previews = PreviewSink(self.storage, job.source, job.request_id)
        try:
            reporter = Reporter(self.store, running, previews)
            result = self.run(request, self.engine, settings, self._progress(reporter), running.stop)
        except GenerationCancelled:
            if running.lost:  # the heartbeat (or the drain's hand-back) logged why when it happened
                log.info("%s stopped; this run no longer holds the job: nothing recorded", job.request_id)
            elif self._stopping.is_set() and not running.cancelled:  # run again after the restart
                self._retry(lambda: running.lost or self.store.release(job.request_id, running.claim))
                self.metrics.handed_back.inc()
            else:
                self._record(job, Status.CANCELLED)
            return
        except Exception as e:  # noqa: BLE001  # recorded on the job; the worker goes on
            code = "invalid_input" if isinstance(e, InvalidRequest) else "generation_failed"
            if code != "invalid_input":
                log.exception("generation %s failed", job.request_id)
            self._record(job, Status.FAILED, error_code=code, error_message=str(e)[:500])
            return
        finally:
            previews.clear()  # a preview lives only while its job runs
            if scratch is not None:
                scratch.unlink(missing_ok=True)
        self._finish(job, running, result)

    def _finish(self, job: Job, running: Running, result: GenerationResult) -> None:
        """Keep the outputs and record the success, unless the lease is lost: then nothing lands."""
        files = (result.video_path, result.thumbnail_path, result.metadata_path)
        if running.lost:
            log.info("%s finished after this run lost the job; its outputs are discarded", job.request_id)
            for path in files:
                Path(path).unlink(missing_ok=True)
            return
        t0 = time.perf_counter()
        outcome = self._keep_outputs(result, job.source)
        self.metrics.stages(result.timings_s, self._mode(job.params), time.perf_counter() - t0)
        if self._record(job, Status.SUCCESS, **outcome):
            self.engine.cost = calibrate(self.engine.cost, result)
        else:  # taken over meanwhile: the run that took over keeps its own outputs
            for name in ("video_path", "thumbnail_path", "metadata_path"):
                self.storage.delete(str(outcome[name]))

    def _restore(self, job: Job, folder: Path) -> tuple[ValidRequest, Path | None]:
        """The job's validated request. An extension's input is its parent MP4, whose last frame is
        the start: read where it is, or fetched from the bucket into `folder` (returned, to delete)."""
        end = load_stored(self.storage.read_bytes(job.last_image_path)) if job.last_image_path else None
        if not job.params.get("parent"):
            image = load_stored(self.storage.read_bytes(job.input_path))
            return ValidRequest.restore(job.params, image, last_image=end), None
        path, scratch = self.storage.local_path(job.input_path), None
        if path is None:
            path = scratch = folder / f"{job.request_id}.parent.mp4"
            write_durably(path, self.storage.read_bytes(job.input_path))
        return ValidRequest.restore(job.params, last_frame(path), str(path), end), scratch

    def _keep_outputs(self, result: GenerationResult, source: str) -> dict[str, object]:
        """Move the files into storage (local: already there) and describe the success."""
        folder = "ui" if source == "ui" else "rest"
        where = {
            name: self.storage.put_file(f"outputs/{folder}/{path.name}", path)
            for name, path in (("video_path", result.video_path), ("thumbnail_path", result.thumbnail_path),
                               ("metadata_path", result.metadata_path))
        }  # fmt: skip
        return dict(where, final_prompt=result.final_prompt, seed_used=result.seed_used)

    def _record(self, job: Job, status: Status, **outcome: object) -> bool:
        """Finish the job under this run's claim (heartbeat.record: nothing once the lease is lost)."""
        running = self._current or Running(job.request_id, claim_of(job))
        if not record(self.store, running, status, self._stopping, **outcome):
            return False
        self.metrics.job_finished(status, self._mode(job.params), outcome.get("error_code"))
        return True

    def _retry(self, write: Callable[[], object]) -> object:
        """Run a store write until the database answers (or the worker stops); returns its result."""
        while True:
            try:
                return write()
            except StoreUnavailable as e:
                if self._stopping.is_set():
                    log.warning("stopping with the database down (%s); the lease will run out", e)
                    return False
                time.sleep(RECORD_RETRY_S)

    def _reclaim_when_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_reclaim:
            self._next_reclaim = now + max(RECLAIM_EVERY_S, self.settings.lease_s / 6)
            found = self.store.recover(self.settings.max_attempts, expired_only=True)
            for outcome, count in found.items():
                self.metrics.recovered.labels(outcome).inc(count)
                if outcome == "failed" and count:
                    self.metrics.failed.labels("worker_lost").inc(count)
            if any(found.values()):
                log.warning("jobs whose worker stopped renewing its lease: %s", found)


def _generate(*args, **kwargs) -> GenerationResult:
    from wan_demo.generate import generate  # torch: imported by the first run, not by the web server

    return generate(*args, **kwargs)


def output_dir(settings: Settings, source: str) -> Path:
    """Outputs per source: the UI's folder is the only one Gradio may serve; REST outputs are
    reachable only through the authenticated REST routes."""
    return Path(settings.output_dir) / ("ui" if source == "ui" else "rest")
