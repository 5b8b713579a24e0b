"""A worker across a real PostgreSQL outage (issue 27): the server stops while a run is in its last
step and starts again while the worker retries its outcome. The success lands once and the log tells
the true order: the outcome recorded, and no "lost the lease" after it. Then the same outage with a
worker_lost job visible through the REST API, with a message that names claims vs runs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest
from apitools import KEY_A, api_settings, auth, b64_image, body, paused_generation, serve
from conftest import ask, make_image

from bench.services import TempPostgres, postgres_bin
from wan_demo.jobs.common import Status, StoreUnavailable
from wan_demo.jobs.service import JobService
from wan_demo.jobs.store.postgres import PostgresJobStore
from wan_demo.jobs.worker import Worker

LEASE_S = 3.0  # renewed every second; the outage below is longer than one lease


@pytest.fixture(scope="module")
def pg(request):
    """A server of this module's own: the test stops and starts it."""
    if postgres_bin() is None:
        request.getfixturevalue("postgres")  # skips, or fails in CI, with the install hint
    server = TempPostgres().start()
    yield server
    server.stop()


def wait_for(check, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except StoreUnavailable:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_an_outcome_written_across_an_outage_is_logged_in_the_true_order(pg, engine, settings, image, caplog,
                                                                         monkeypatch):  # fmt: skip
    s = settings.replace(lease_s=LEASE_S, role="worker", database_url=pg.url, database_timeout_s=1.0)
    jobs = JobService(PostgresJobStore(pg.url, pool_size=2, timeout_s=1.0), s, engine.plan_info).start()
    worker = Worker(jobs.store, engine, s, storage=jobs.storage, worker_id="w-outage").start()
    try:
        with (
            paused_generation(monkeypatch) as (reached, release),
            caplog.at_level(logging.INFO, "wan_demo.jobs"),
        ):
            job = jobs.submit(ask(image, "across an outage"), "ui", "ui")
            assert reached.wait(60)
            pg.server("stop")
            release.set()  # the run ends while the database is down: its outcome waits
            wait_for(lambda: list(Path(s.output_dir).rglob("*.mp4")))
            time.sleep(2 * LEASE_S / 3)  # a few failed writes and beats
            pg.server("start")
            done = wait_for(lambda: (j := jobs.store.get(job.request_id)).status == Status.SUCCESS and j)
            wait_for(lambda: not worker.busy)
            time.sleep(2 * LEASE_S / 3)  # two more beats: none may claim the lease was lost
    finally:
        worker.stop()
        jobs.close()
    assert done.worker_id == "w-outage" and done.video_path and Path(done.video_path).exists()
    story = [
        r.getMessage() for r in caplog.records if "lease" in r.getMessage() or "recorded" in r.getMessage()
    ]
    assert any(f"{job.request_id}: success recorded" in m for m in story), story
    assert not any("lost the lease" in m or "not recorded" in m for m in story), story


def test_worker_lost_through_the_api_names_claims_and_runs(engine, tmp_path):
    """A request whose workers died six times before its first denoising step (other nodes'
    crashes, made here through the store as those nodes would) is failed with a message that says so."""
    with (
        serve(api_settings(tmp_path), engine, run_worker=False) as (url, service, _),
        httpx.Client(base_url=url) as c,
    ):
        rid = c.post("/api/v1/apikey/requests", json=body(b64_image(make_image(96, 64))), headers=auth(KEY_A))
        rid = rid.json()["request_id"]
        store = service.jobs.store
        for _ in range(6):
            assert store.claim_next("dead-worker", 30.0).request_id == rid
            store._db.execute("UPDATE requests SET lease_until = 0 WHERE request_id = ?", (rid,))
            store.recover(max_attempts=2, expired_only=True)
        view = c.get(f"/api/v1/apikey/requests/{rid}", headers=auth(KEY_A)).json()
    assert view["status"] == "failed" and view["error"]["code"] == "worker_lost"
    assert view["error"]["message"] == (
        "a worker claimed this request 6 times and stopped each time before the first denoising step"
    )
