"""The job queue: service + worker on the tiny model. One generation at a time, FIFO, queue cap,
cancel queued and running, failures recorded, restart recovery, and the clean-up sweeper."""

import os
import time

import pytest
from conftest import ask

from wan_demo.core.request import InvalidRequest
from wan_demo.generate import generate
from wan_demo.jobs import cleanup
from wan_demo.jobs.common import QueueFull, Status, TooManyActive
from wan_demo.jobs.service import JobService
from wan_demo.jobs.store.sqlite import SqliteJobStore
from wan_demo.jobs.worker import Worker
from wan_demo.media.video import count_frames


def wait(jobs: JobService, job, statuses=(Status.SUCCESS, Status.FAILED, Status.CANCELLED), timeout=120):
    deadline = time.monotonic() + timeout
    while (current := jobs.get(job.request_id, job.owner)).status not in statuses:
        assert time.monotonic() < deadline, f"{job.request_id} stuck in {current.status}"
        time.sleep(0.02)
    return current


@pytest.fixture
def queue(engine, settings):
    """(service, worker) on a fresh store; the worker is started by the test when it wants."""
    s = settings.replace(queue_max_size=3, max_active_per_key=2)
    jobs = JobService(SqliteJobStore(s.data_dir / "jobs.sqlite3"), s, engine.plan_info).start()
    worker = Worker(jobs.store, engine, s)
    jobs.worker = worker
    yield jobs, worker
    worker.stop()
    jobs.close()


def test_jobs_run_one_at_a_time_in_order(queue, image):
    jobs, worker = queue
    submitted = [jobs.submit(ask(image, f"clip {i}", seed=i), "ui", "ui") for i in range(3)]
    assert [jobs.position(j) for j in submitted] == [1, 2, 3]
    assert all(jobs.eta_s(j) > 0 for j in submitted)
    worker.start()
    done = [wait(jobs, j) for j in submitted]
    assert [d.status for d in done] == [Status.SUCCESS] * 3
    assert [d.seed_used for d in done] == [0, 1, 2] and all(d.worker_id == worker.worker_id for d in done)
    assert count_frames(done[0].video_path)[0] == 81
    spans = sorted((d.started_at, d.completed_at) for d in done)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    assert [d.params["prompt"] for d in sorted(done, key=lambda d: d.started_at)] == [
        "clip 0",
        "clip 1",
        "clip 2",
    ]
    assert jobs.position(done[0]) is None and jobs.eta_s(done[0]) is None


def test_capacity_and_plan_refusals_at_submit(queue, image):
    jobs, _ = queue
    with pytest.raises(InvalidRequest, match="'fast' needs the step-distilled LoRA"):
        jobs.submit(ask(image, "x", speed_mode="fast"), "ui", "ui")
    for i in range(2):
        jobs.submit(ask(image, f"k{i}"), "key_a", "rest")
    with pytest.raises(TooManyActive, match="2 active requests; the limit is 2"):
        jobs.submit(ask(image, "one more"), "key_a", "rest")
    jobs.submit(ask(image, "ui"), "ui", "ui")  # the per-key limit is for API keys only
    with pytest.raises(QueueFull, match="3 generations are waiting"):
        jobs.submit(ask(image, "full"), "ui", "ui")
    assert len(list(jobs.inputs_dir.iterdir())) == 3  # refused submits leave no input behind


def test_cancel_queued_and_running(queue, image, settings):
    jobs, worker = queue
    long = jobs.submit(ask(image, "long", steps=100), "ui", "ui")
    waiting = jobs.submit(ask(image, "waiting"), "ui", "ui")
    assert jobs.cancel(waiting.request_id, "someone-else") is None  # not theirs: looks absent
    assert jobs.cancel(waiting.request_id, "ui") == Status.QUEUED
    worker.start()
    wait(jobs, long, (Status.PROCESSING,))
    while jobs.get(long.request_id, "ui").progress_report.step == 0:
        time.sleep(0.02)
    assert jobs.cancel(long.request_id, "ui") == Status.PROCESSING
    assert wait(jobs, long).status == Status.CANCELLED and wait(jobs, waiting).status == Status.CANCELLED
    assert not list(settings.output_dir.rglob("*.mp4"))  # neither wrote a video


def test_worker_survives_a_failing_generation(engine, settings, image):
    """`run` is the seam ZeroGPU uses; here it fails once like an OOM would."""
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return generate(*args, **kwargs)

    jobs = JobService(SqliteJobStore(settings.data_dir / "j.sqlite3"), settings, engine.plan_info).start()
    worker = Worker(jobs.store, engine, settings, run=flaky).start()
    try:
        bad = jobs.submit(ask(image, "first"), "ui", "ui")
        good = jobs.submit(ask(image, "second"), "ui", "ui")
        bad = wait(jobs, bad)
        assert (bad.status, bad.error_code) == (Status.FAILED, "generation_failed")
        assert "out of memory" in bad.error_message
        assert wait(jobs, good).status == Status.SUCCESS
    finally:
        worker.stop()
        jobs.close()


def test_sweeper_expires_outputs_inputs_and_rows(queue, image, settings):
    """Files on disk: old outputs and inputs go, a queued job's input stays however old, new
    files stay, and finished rows past the history retention are deleted."""
    jobs, _ = queue
    s = jobs.settings.replace(output_ttl_h=1.0, history_ttl_h=2.0)
    settings.output_dir.mkdir(parents=True)
    old, new = time.time() - 2 * 3600, time.time()
    outputs = {
        name: settings.output_dir / name for name in ("a.mp4", "a.jpg", "a.json", "b.mp4", "notes.txt")
    }
    for name, path in outputs.items():
        path.write_bytes(b"x")
        os.utime(path, (old, old) if name != "b.mp4" else (new, new))
    queued = jobs.submit(ask(image, "still waiting"), "ui", "ui")
    finished = jobs.submit(ask(image, "done long ago"), "ui", "ui")
    jobs.cancel(finished.request_id, "ui")
    for job in (queued, finished):
        os.utime(job.input_path, (old, old))
    jobs.store._db.execute(
        "UPDATE requests SET completed_at = ? WHERE request_id = ?", (old - 3600, finished.request_id)
    )

    removed = cleanup.sweep(jobs.store, s)
    assert removed == {"outputs": 3, "inputs": 1, "rows": 1}
    assert sorted(p.name for p in settings.output_dir.iterdir()) == ["b.mp4", "notes.txt"]
    assert os.path.exists(queued.input_path) and not os.path.exists(finished.input_path)
    assert jobs.store.get(finished.request_id) is None and jobs.store.get(queued.request_id) is not None
    assert cleanup.sweep(jobs.store, s.replace(output_ttl_h=0, history_ttl_h=0)) == {
        "outputs": 0, "inputs": 0, "rows": 0,
    }  # fmt: skip


def test_restart_requeues_a_job_that_was_running(engine, settings, image):
    path = settings.data_dir / "r.sqlite3"
    jobs = JobService(SqliteJobStore(path), settings, engine.plan_info).start()
    job = jobs.submit(ask(image, "interrupted"), "ui", "ui")
    assert jobs.store.claim_next("dead-worker", 30.0).request_id == job.request_id
    jobs.close()  # the process "dies" mid-job

    jobs = JobService(SqliteJobStore(path), settings, engine.plan_info).start()  # recovers at start
    worker = Worker(jobs.store, engine, settings).start()
    try:
        done = wait(jobs, job)
        assert (done.status, done.attempts, done.claims) == (Status.SUCCESS, 1, 2)  # the crash never ran it
    finally:
        worker.stop()
        jobs.close()
