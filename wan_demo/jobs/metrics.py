"""Prometheus metrics of one process, with `prometheus_client` (text exposition, naming conventions:
`_total` counters, `_seconds` / `_bytes` units, bounded label values only: never a request id, a
prompt or a key as a label).

Each process counts what happens in it: API nodes count submits, refusals and webhook deliveries;
workers count finished jobs, time in queue and generation seconds per stage, and show the job they
run and their memory (GPU memory through model/gpu.py when CUDA is there). Figures of the shared
queue (jobs per status, oldest queued age, webhook backlog, live workers) are read from the job store
when scraped (`watch_queue`), on HTTP-serving nodes. Prometheus sums counters over instances.
docs/operations.md lists every metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from wan_demo.jobs.common import Status

SPEED_MODES = ("quality", "fast")
STAGES = ("prompt", "encode", "denoise", "preview", "decode", "write")
# Time in queue spans a second (idle GPU) to hours (a long queue); generation stages ms to minutes.
QUEUE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)
ERROR_CODES = ("internal", "invalid_input", "damaged_record", "generation_failed", "worker_lost")
REFUSALS = ("rate_limited", "too_many_active", "queue_full", "draining", "unavailable")
DELIVERY_RESULTS = ("delivered", "retry", "given_up")


def mode_label(mode: Any) -> str:
    return mode if mode in SPEED_MODES else "other"


def bounded(value: Any, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else "other"


class Metrics:
    """This process's registry and instruments. Building registers nothing outside it."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds (Linux)
        self.submitted = Counter(
            "wan_demo_jobs_submitted", "Jobs queued by this node", ["source", "speed_mode"], registry=r
        )
        self.refused = Counter(
            "wan_demo_submits_refused", "Submits refused by this node, by reason", ["reason"], registry=r
        )
        self.finished = Counter(
            "wan_demo_jobs_finished", "Jobs this worker finished", ["status", "speed_mode"], registry=r
        )
        self.failed = Counter("wan_demo_jobs_failed", "Failed jobs by error code", ["code"], registry=r)
        self.handed_back = Counter(
            "wan_demo_jobs_handed_back", "Running jobs given back to the queue on stop (drain)", registry=r
        )
        self.recovered = Counter(
            "wan_demo_jobs_recovered", "Jobs of lost workers repaired, by outcome", ["outcome"], registry=r
        )
        self.queue_wait = Histogram(
            "wan_demo_queue_wait_seconds", "Time from submit to claim", buckets=QUEUE_BUCKETS, registry=r
        )
        self.stage = Histogram(
            "wan_demo_generation_seconds", "Generation seconds per stage of finished jobs",
            ["stage", "speed_mode"], buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.deliveries = Counter(
            "wan_demo_webhook_deliveries", "Webhook delivery attempts by result", ["result"], registry=r
        )
        self.busy = Gauge("wan_demo_worker_busy", "1 while this worker runs a job", registry=r)
        self.job_progress = Gauge(
            "wan_demo_worker_job_progress_ratio", "Progress of the running job, 0..1", registry=r
        )
        self.job_started = Gauge(
            "wan_demo_worker_job_started_timestamp_seconds", "When the running job was claimed (0 = none)",
            registry=r,
        )  # fmt: skip

    # -- what callers record -------------------------------------------------------------------
    def job_finished(self, status: Status, mode: str, code: str | None = None) -> None:
        self.finished.labels(str(status), mode_label(mode)).inc()
        if status == Status.FAILED:
            self.failed.labels(bounded(code, ERROR_CODES)).inc()

    def stages(self, timings: dict[str, float], mode: str, write_s: float) -> None:
        for stage, seconds in stage_seconds(timings, write_s).items():
            self.stage.labels(stage, mode_label(mode)).observe(max(seconds, 0.0))

    def running(self, started: bool) -> None:
        self.busy.set(1 if started else 0)
        self.job_started.set(time.time() if started else 0)
        self.job_progress.set(0)

    # -- read on scrape ------------------------------------------------------------------------
    def watch_queue(self, read: Callable[[], dict[str, Any]]) -> None:
        """Gauges of the shared queue, from `read()` (JobService.queue_figures) at each scrape."""
        self.registry.register(_QueueCollector(read))

    def watch_gpu(self, read: Callable[[], list[dict[str, Any]]]) -> None:
        """GPU memory gauges from `read()` (model/gpu.py memory_stats) at each scrape."""
        self.registry.register(_GpuCollector(read))

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def stage_seconds(timings: dict[str, float], write_s: float = 0.0) -> dict[str, float]:
    """generate()'s timings (generate.Timer, with the pipeline's phase breakdown) as the six stages."""
    t = lambda k: timings.get(k, 0.0)  # noqa: E731
    pipeline = t("pipeline") + t("preview")  # preview seconds were carved out of the pipeline
    denoise = t("pipeline.denoise") if "pipeline.denoise" in timings else pipeline
    return {
        "prompt": t("plan") + t("prompt"),
        "encode": t("image") + t("pipeline.encode"),
        "denoise": denoise - t("preview"),
        "preview": t("preview"),
        "decode": t("pipeline.decode"),
        "write": t("encode") + write_s,  # the MP4, thumbnail and sidecar, then the upload to storage
    }


class _QueueCollector:
    def __init__(self, read: Callable[[], dict[str, Any]]):
        self.read = read

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("wan_demo_store_up", "1 when the job store answered this scrape")
        try:
            figures = self.read()
        except Exception:  # noqa: BLE001  # the database is down: say so, show nothing stale
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("wan_demo_jobs", "Jobs in the store by status", labels=["status"])
        for status in Status:
            jobs.add_metric([str(status)], figures["jobs"].get(str(status), 0))
        yield jobs
        yield GaugeMetricFamily("wan_demo_queue_depth", "Queued jobs", value=figures["jobs"].get("queued", 0))
        yield GaugeMetricFamily(
            "wan_demo_queue_oldest_age_seconds", "Age of the oldest queued job (0 = none)",
            value=figures["oldest_queued_s"],
        )  # fmt: skip
        yield GaugeMetricFamily(
            "wan_demo_webhook_backlog", "Webhook events waiting in the outbox", value=figures["outbox"]
        )
        yield GaugeMetricFamily(
            "wan_demo_workers_alive", "Workers that renewed within one lease", value=figures["workers"]
        )


class _GpuCollector:
    def __init__(self, read: Callable[[], list[dict[str, Any]]]):
        self.read = read

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "wan_demo_gpu_memory_bytes", "CUDA memory of this process (torch.cuda)", labels=["device", "kind"]
        )
        for device in self.read():
            for kind in ("allocated", "reserved", "peak"):
                family.add_metric([str(device["device"]), kind], device[kind])
        yield family
