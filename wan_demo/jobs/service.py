"""JobService: the one interface the UI, the Gradio API and the REST API use for jobs.

Submit (capacity checks, input image kept durably, row committed before the caller answers),
look up, list, cancel, delete (row and files), queue position and ETA, and the job's files
(jobs/storage/base.py). The web and REST layers never touch the store. On an API node (no model) the
engine info comes from the workers table (jobs/directory.py).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from wan_demo.core.plan import EngineInfo, plan_run
from wan_demo.core.request import ParentClip, ValidRequest
from wan_demo.core.settings import Settings
from wan_demo.jobs.common import (
    ACTIVE,
    Job,
    QueueFull,
    Status,
    StoreUnavailable,
    TooManyActive,
)
from wan_demo.jobs.directory import Directory
from wan_demo.jobs.health import Drain, Draining, readiness
from wan_demo.jobs.inputs import SourceImage, parent_clip, store_inputs
from wan_demo.jobs.loading import FAILED, READY, LoadFailed, ModelLoader, Readiness
from wan_demo.jobs.lora_requests import LoraRequests
from wan_demo.jobs.metrics import Metrics
from wan_demo.jobs.storage.base import Storage, make_storage
from wan_demo.jobs.storage.common import write_durably
from wan_demo.jobs.store.base import JobStore

if TYPE_CHECKING:
    from wan_demo.model.lora_library import LoraLibrary

log = logging.getLogger(__name__)


class WorkerHandle(Protocol):
    """What the service needs from an in-process Worker: wake it, stop a running job."""

    def wake(self) -> None: ...
    def interrupt(self, request_id: str) -> None: ...
    def state(self) -> str: ...


class JobService(LoraRequests):
    def __init__(
        self, store: JobStore, settings: Settings, engine_info: Callable[[], EngineInfo] | None = None,
        storage: Storage | None = None, metrics: Metrics | None = None,
    ):  # fmt: skip
        """`engine_info`: the local engine's (role all); None on an API node = what workers publish."""
        self.store, self.settings = store, settings
        self.metrics = metrics or Metrics()  # this process's (jobs/metrics.py)
        self.drain = Drain()  # SIGTERM: no new submits, in-flight requests finish (jobs/health.py)
        self.storage = storage or make_storage(settings)
        self.directory = Directory(store, settings.lease_s)
        self.engine_info = engine_info or self.directory.engine_info
        self.inputs_dir = Path(settings.data_dir) / "inputs"  # local storage only
        self.worker: WorkerHandle | None = None  # set when a Worker runs in this process
        self.loader: ModelLoader | None = None  # set when this process loads a model (jobs/loading.py)
        self._loras: LoraLibrary | None = None  # the engine's when it runs here (server.build)

    def start(self) -> JobService:
        self.store.open()
        self.storage.open()
        # Alone on an embedded SQLite file, every processing job belongs to a dead process; with other
        # processes about, only jobs whose lease ran out do.
        alone = self.settings.role == "all" and not self.settings.database_url
        recovered = self.store.recover(self.settings.max_attempts, expired_only=not alone)
        if any(recovered.values()):
            log.warning("jobs recovered after a restart: %s", recovered)
        return self

    def close(self) -> None:
        self.store.close()

    def check_capacity(self, owner: str, per_owner: bool, adding: int = 1) -> None:
        """Raise TooManyActive / QueueFull early (the insert checks again, atomically); `per_owner`
        applies the per-key limit (REST keys); `adding`: jobs this submit queues (a batch)."""
        limit, batch = self.settings.max_active_per_key, f" (this submit adds {adding})" if adding > 1 else ""
        with self.counting_refusals():
            self.drain.check_submit()
            self._check_model()
            if per_owner and (active := self.store.count(ACTIVE, owner)) + adding > limit:
                raise TooManyActive(f"this key has {active} active requests; the limit is {limit}{batch}")
            if self.store.count((Status.QUEUED,)) + adding > self.settings.queue_max_size:
                q = self.settings.queue_max_size
                raise QueueFull(f"{q} generations are waiting{batch}; try again later")

    @contextmanager
    def counting_refusals(self) -> Iterator[None]:
        """Count a refused submit by reason (wan_demo_submits_refused_total) and let it through."""
        reasons = ((Draining, "draining"), (TooManyActive, "too_many_active"), (QueueFull, "queue_full"),
                   (StoreUnavailable, "unavailable"), (LoadFailed, "model_unavailable"))  # fmt: skip
        try:
            yield
        except (Draining, TooManyActive, QueueFull, StoreUnavailable, LoadFailed) as e:
            self.metrics.refused.labels(next(r for kind, r in reasons if isinstance(e, kind))).inc()
            raise

    def submit(
        self, request: ValidRequest, owner: str, source: str, payload: dict[str, Any] | None = None,
        image: SourceImage | None = None, webhook: dict[str, Any] | None = None,
        idempotency: tuple[str, str] | None = None, last_image: SourceImage | None = None,
    ) -> Job:  # fmt: skip
        """Plan (refusing what the engine cannot run), store the input, queue. Returns the job.
        An extension's input is a copy of its parent MP4 (the parent may expire while it waits).
        `webhook`: the checked subscription ({url, events, base}); `idempotency`: (key, body hash),
        stored with the job in one transaction (IdempotentReplay when the key was used already);
        `last_image`: the end frame's bytes as sent (default: a PNG of request.last_image)."""
        payloads = [payload] if payload is not None else None
        return self.submit_batch([request], owner, source, payloads, image, webhook, idempotency, last_image)[
            0
        ]

    def submit_batch(
        self, requests: list[ValidRequest], owner: str, source: str, payloads: list[dict] | None = None,
        image: SourceImage | None = None, webhook: dict[str, Any] | None = None,
        idempotency: tuple[str, str] | None = None, last_image: SourceImage | None = None,
    ) -> list[Job]:  # fmt: skip
        """`submit` for several requests (a batch: the same picture, one seed each): every job is
        queued in one transaction or none is (the queue cap and the per-key limit count each job);
        they share a batch_id when there are several. Each job keeps its own copy of the inputs."""
        plans = [plan_run(r, self.settings, self.engine_info()) for r in requests]  # InvalidRequest
        requests = [self.resolve_loras(r) for r in requests]  # library names, hub files, uploads
        per_owner = source == "rest"
        self.check_capacity(owner, per_owner, len(requests))
        batch_id = str(uuid.uuid4()) if len(requests) > 1 else None
        jobs: list[Job] = []
        try:
            for k, (request, plan) in enumerate(zip(requests, plans, strict=True)):
                payload = payloads[k] if payloads else None
                job = self._stored(request, owner, source, payload, image, last_image, plan.est_seconds)
                job.batch_id, job.webhook = batch_id, webhook or {}
                jobs.append(job)
            owner_max = self.settings.max_active_per_key if per_owner else None
            # the capacity check and the insert are one transaction, across every API node
            with self.counting_refusals():
                self.store.add_many(jobs, self.settings.queue_max_size, owner_max, idempotency)
        except StoreUnavailable:  # the insert may have committed before the connection dropped: the
            raise  # inputs stay (the sweeper removes them if no job holds them); a keyed retry finds it
        except BaseException:
            for job in jobs:
                for location in (job.input_path, job.last_image_path):
                    if location:
                        self.storage.delete(location)
            raise
        for plan in plans:
            self.metrics.submitted.labels(source, plan.speed_mode).inc()
        if self.worker is not None:
            self.worker.wake()
        return jobs

    def _stored(
        self, request: ValidRequest, owner: str, source: str, payload: dict[str, Any] | None,
        image: SourceImage | None, last_image: SourceImage | None, est_seconds: float,
    ) -> Job:  # fmt: skip
        return store_inputs(self.storage, request, owner, source, payload, image, last_image, est_seconds)

    def parent(self, request_id: str, owner: str, folder: Path) -> ParentClip:
        """A finished job of `owner` as a clip to extend; ParentUnavailable says why it cannot be."""
        return parent_clip(self.storage, self.get(request_id, owner), request_id, folder)

    def replay(self, owner: str, key: str) -> tuple[str, str] | None:
        """(request_id, body hash) this owner's Idempotency-Key created within 24 h, or None."""
        return self.store.idempotent(owner, key)

    def webhook_state(self, job: Job) -> dict[str, Any]:
        """Delivery state of the job's webhook events (attempts, last status, next attempt, counts)."""
        return self.store.webhook_state(job.request_id)

    def readiness(self) -> dict[str, Any]:
        """What /readyz answers (jobs/health.py): store, storage, this process's model load and
        worker, draining; how many workers are alive is a field (an API node without one still
        queues work)."""
        return readiness(self)

    def model_state(self) -> Readiness:
        """Can this process run generations? loading (stage, fraction) / ready / failed (reason):
        the banner, REST's GET /models/{id} status and /readyz's "model" check read it. An API
        node loads no model: it is ready to queue, workers elsewhere run the jobs."""
        if self.loader is not None:
            return self.loader.readiness()
        if self.worker is not None:
            return Readiness(READY, "worker running", 1.0)
        alive = len(self.directory.alive())
        return Readiness(READY, f"API node: {alive} live worker{'s' if alive != 1 else ''} run the jobs", 1.0)

    def _check_model(self) -> None:
        """Refuse a submit nobody can run: this process's model failed to load and no other worker
        is alive. While it loads, jobs are accepted and wait in the queue."""
        state = self.model_state()
        if state.state == FAILED and not self.directory.alive():
            raise LoadFailed(state.reason)

    def queue_figures(self) -> dict[str, Any]:
        """The shared queue for /metrics: jobs per status, oldest queued age, webhook backlog, workers."""
        return {**self.store.stats(), "workers": len(self.directory.alive())}

    def workers_alive(self) -> int:
        """Live workers (any process); an in-process worker counts even before its first beat."""
        return max(len(self.directory.alive()), 1 if self.worker is not None else 0)

    def get(self, request_id: str, owner: str) -> Job | None:
        """The job if it exists and belongs to `owner`; others' jobs look absent."""
        job = self.store.get(request_id)
        return job if job is not None and job.owner == owner else None

    def list(
        self,
        owner: str,
        model: str | None = None,
        status: str | None = None,
        limit: int = 20,
        offset: int = 0,
        batch_id: str | None = None,
    ) -> tuple[list[Job], int]:
        return self.store.list_jobs(owner, model, status, limit, offset, batch_id)

    def cancel(self, request_id: str, owner: str) -> Status | None:
        """Queued: cancelled at once; processing: stops at the next denoising step. Returns the
        status before the call (None for an unknown or foreign id)."""
        if self.get(request_id, owner) is None:
            return None
        before = self.store.cancel(request_id)
        if before == Status.PROCESSING and self.worker is not None:
            self.worker.interrupt(request_id)  # in-process: at once; other workers poll the flag
        return before

    def delete(self, request_id: str, owner: str) -> bool:
        """Remove a job of `owner` with its files (video, thumbnail, sidecar, stored input, and a UI
        job's local copies of bucket files). A queued or running job is cancelled first (a running
        one stops at its next step and writes nothing). False for an unknown or foreign id."""
        job = self.get(request_id, owner)
        if job is None:
            return False
        if job.status in ACTIVE:
            self.cancel(request_id, owner)
        self.store.delete([request_id])
        roots = (Path(self.settings.output_dir).resolve(), self.inputs_dir.resolve())
        for location in (job.video_path, job.thumbnail_path, job.metadata_path, job.input_path,
                         job.last_image_path):  # fmt: skip
            local = self.storage.local_path(location) if location else None
            if local is None and location:
                self.storage.delete(location)  # a bucket object
                local = Path(self.settings.output_dir) / "ui" / location.rsplit("/", 1)[-1]  # its copy
            if local is not None and any(local.resolve().is_relative_to(root) for root in roots):
                local.unlink(missing_ok=True)  # only files inside our own folders
        return True

    def position(self, job: Job) -> int | None:
        """1-based place in the queue, 0 while running, None once finished."""
        if job.status == Status.QUEUED:
            return self.store.queue_ahead(job)[0] + 1
        return 0 if job.status == Status.PROCESSING else None

    def eta_s(self, job: Job) -> float | None:
        """Estimated seconds until `job` finishes: the running job's remainder, the jobs ahead, its own."""
        if job.status == Status.PROCESSING:
            return job.progress_report.eta_s if job.progress_report.eta_s is not None else job.est_seconds
        if job.status != Status.QUEUED:
            return None
        _, ahead_s = self.store.queue_ahead(job)
        running = self.store.running()
        left = sum(r.progress_report.eta_s or r.est_seconds for r in running)
        return round((left + ahead_s) / max(self.workers_alive(), 1) + job.est_seconds, 1)

    def local_files(self, job: Job) -> tuple[str | None, str | None]:
        """A finished UI job's video and thumbnail as local files Gradio may serve (output_dir/ui):
        the files themselves with local storage, fresh copies from the bucket otherwise."""
        if job.source != "ui":
            raise ValueError("only UI jobs' files go to the Gradio-served folder")
        folder = Path(self.settings.output_dir) / "ui"
        return tuple(self._local_copy(loc, folder) for loc in (job.video_path, job.thumbnail_path))

    def _local_copy(self, location: str | None, folder: Path) -> str | None:
        if location is None or self.storage.local_path(location) is not None:
            return location
        path = folder / location.rsplit("/", 1)[-1]
        if not path.is_file():
            write_durably(path, self.storage.read_bytes(location))
        return str(path)
