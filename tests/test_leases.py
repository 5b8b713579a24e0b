"""The worker's lease in action (tiny model, SQLite): renewed while a long step runs, a cancel made
on another node stops the run, and a run whose lease was taken over records nothing."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from apitools import paused_generation, wait_job
from conftest import ask

from wan_demo.jobs.common import Status
from wan_demo.jobs.service import JobService
from wan_demo.jobs.store.sqlite import SqliteJobStore
from wan_demo.jobs.worker import Worker

LEASE_S = 1.0  # renewed every 1/3 s


@pytest.fixture
def node(engine, settings):
    """A worker process's parts, with the database shared as other nodes would share it."""
    s = settings.replace(lease_s=LEASE_S, database_url="", role="worker")
    jobs = JobService(SqliteJobStore(s.data_dir / "r.sqlite3"), s, engine.plan_info).start()
    worker = Worker(jobs.store, engine, s, storage=jobs.storage, worker_id="w-test").start()
    yield jobs, worker
    worker.stop()
    jobs.close()


def wait_running(jobs: JobService, rid: str) -> None:
    deadline = time.monotonic() + 60
    while jobs.store.get(rid).status != Status.PROCESSING:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_the_heartbeat_keeps_a_long_run_claimed(node, image, monkeypatch):
    jobs, _ = node
    with paused_generation(monkeypatch) as (reached, release):
        job = jobs.submit(ask(image, "long step"), "ui", "ui")
        assert reached.wait(60)
        for _ in range(8):  # 4 leases long: another node's reclaim sweep finds nothing to take
            time.sleep(LEASE_S / 2)
            assert jobs.store.recover(expired_only=True)["requeued"] == 0
        release.set()
        done = wait_job(jobs, job)
    assert (done.status, done.claims, done.attempts, done.worker_id) == (Status.SUCCESS, 1, 1, "w-test")


def test_a_cancel_from_another_node_stops_the_run(node, image, monkeypatch):
    jobs, _ = node
    with paused_generation(monkeypatch) as (reached, release):
        job = jobs.submit(ask(image, "cancel me"), "ui", "ui")
        assert reached.wait(60)
        jobs.store.cancel(job.request_id)  # the store only: no in-process interrupt
        time.sleep(LEASE_S)  # the heartbeat sees the flag and sets the stop event
        release.set()
        done = wait_job(jobs, job)
    assert done.status == Status.CANCELLED


def test_a_run_that_lost_its_lease_records_nothing(node, image, monkeypatch):
    jobs, worker = node
    with paused_generation(monkeypatch) as (reached, release):
        job = jobs.submit(ask(image, "taken over"), "ui", "ui")
        assert reached.wait(60)
        worker.heartbeat.stop()  # this worker goes silent (a long GC pause, a network split)
        db = jobs.store._db
        db.execute("UPDATE requests SET lease_until = 0 WHERE request_id = ?", (job.request_id,))
        assert jobs.store.recover(expired_only=True)["requeued"] == 1
        other = jobs.store.claim_next("w-other", 60)  # another worker takes it over
        assert other.request_id == job.request_id and other.claims == 2
        worker.heartbeat.beat()  # the silent worker comes back: its renew fails, it stops
        release.set()
        deadline = time.monotonic() + 60
        while worker.busy:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    now = jobs.store.get(job.request_id)
    assert (now.status, now.worker_id, now.video_path) == (Status.PROCESSING, "w-other", None)


def lease_log(caplog) -> list[str]:
    """The worker's lease story, in the order it was logged."""
    words = ("lost the lease", "recorded", "nothing recorded", "discarded")
    return [r.getMessage() for r in caplog.records if any(w in r.getMessage() for w in words)]


def test_a_beat_right_after_the_outcome_landed_does_not_claim_a_lost_lease(node, image, caplog, monkeypatch):
    """Issue 27: after a database outage the heartbeat and the outcome write both retry every second;
    a beat that came right after the success was recorded logged "lost the lease ... stopping it
    without recording". Here the beat is made to come exactly then."""
    jobs, worker = node
    worker.heartbeat.stop()
    real_finish, beats = jobs.store.finish, []

    def finish_then_beat(*args, **kwargs):
        done = real_finish(*args, **kwargs)
        beats.append(threading.Thread(target=worker.heartbeat.beat))
        beats[-1].start()  # the heartbeat wakes while the outcome is landing
        return done

    monkeypatch.setattr(jobs.store, "finish", finish_then_beat)
    with caplog.at_level(logging.INFO, logger="wan_demo.jobs"):
        done = wait_job(jobs, jobs.submit(ask(image, "recorded"), "ui", "ui"))
        for beat in beats:
            beat.join(10)
    assert done.status == Status.SUCCESS and len(beats) == 1
    story = lease_log(caplog)
    assert len(story) == 1 and f"{done.request_id}: success recorded" in story[0], story


def test_a_run_that_finishes_after_a_silent_takeover_records_and_keeps_nothing(
    node, image, caplog, monkeypatch
):
    jobs, worker = node
    with paused_generation(monkeypatch) as (reached, release), caplog.at_level(logging.INFO, "wan_demo.jobs"):
        job = jobs.submit(ask(image, "taken over quietly"), "ui", "ui")
        assert reached.wait(60)
        worker.heartbeat.stop()  # silent: this run never learns of the takeover before it ends
        jobs.store._db.execute("UPDATE requests SET lease_until = 0 WHERE request_id = ?", (job.request_id,))
        assert jobs.store.recover(expired_only=True)["requeued"] == 1
        assert jobs.store.claim_next("w-other", 60).request_id == job.request_id
        release.set()
        deadline = time.monotonic() + 60
        while worker.busy:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    now = jobs.store.get(job.request_id)
    assert (now.status, now.worker_id, now.video_path) == (Status.PROCESSING, "w-other", None)
    assert not list(Path(jobs.settings.output_dir).rglob("*.mp4"))  # its outputs were removed again
    story = lease_log(caplog)
    assert len(story) == 1 and "outcome success not recorded: the job was taken over" in story[0], story


def test_the_lost_lease_is_logged_before_the_run_stops(node, image, caplog, monkeypatch):
    jobs, worker = node
    with paused_generation(monkeypatch) as (reached, release), caplog.at_level(logging.INFO, "wan_demo.jobs"):
        job = jobs.submit(ask(image, "taken over loudly"), "ui", "ui")
        assert reached.wait(60)
        worker.heartbeat.stop()
        jobs.store._db.execute("UPDATE requests SET lease_until = 0 WHERE request_id = ?", (job.request_id,))
        jobs.store.recover(expired_only=True)
        jobs.store.claim_next("w-other", 60)
        worker.heartbeat.beat()  # back: it finds the lease lost
        release.set()
        deadline = time.monotonic() + 60
        while worker.busy:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    story = lease_log(caplog)
    assert len(story) == 2 and story[0].startswith(f"lost the lease on {job.request_id} (claim 1)"), story
    assert "stopped; this run no longer holds the job: nothing recorded" in story[1], story
