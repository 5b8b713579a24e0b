"""The clean-up sweeper under load (issue 27): a timer of its own in every role, bounded batches, one
sweeper at a time across nodes (a database lock on both backends), and, through the real app (Gradio +
REST + worker in one process), outputs, inputs and Idempotency-Keys expiring while submits keep
coming at a steady rate and the queue is never empty."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from apitools import KEY_A, auth, b64_image, body
from conftest import make_image
from ui_server import running_app

from wan_demo.core.settings import Settings
from wan_demo.jobs import cleanup
from wan_demo.jobs.common import Job, Status
from wan_demo.jobs.storage.local import LocalStorage
from wan_demo.jobs.store.postgres import PostgresJobStore
from wan_demo.jobs.store.sqlite import SqliteJobStore

BASE = "/api/v1/apikey/requests"


@pytest.fixture(params=["sqlite", "postgres"])
def two_nodes(request, tmp_path):
    """Two stores on one database, as two processes (or machines) would open it."""
    if request.param == "sqlite":
        stores = [SqliteJobStore(tmp_path / "requests.sqlite3") for _ in range(2)]
    else:
        url = request.getfixturevalue("database_url")
        stores = [PostgresJobStore(url, pool_size=1) for _ in range(2)]  # one pooled connection: no deadlock
    for store in stores:
        store.open()
    yield stores
    for store in stores:
        store.close()


def test_one_sweeper_at_a_time_across_nodes(two_nodes, tmp_path):
    a, b = two_nodes
    settings = Settings(output_dir=tmp_path / "outputs", data_dir=tmp_path / "data")
    storage = LocalStorage(settings.output_dir, settings.data_dir / "inputs")
    first, second = cleanup.Sweeper(a, storage, settings), cleanup.Sweeper(b, storage, settings)
    with a.exclusive(cleanup.LOCK) as mine:
        assert mine
        assert second.run_once() is None and second.runs == 0  # the other node skips its turn
    assert second.run_once() == {"outputs": 0, "inputs": 0, "rows": 0} and second.runs == 1
    with b.exclusive(cleanup.LOCK) as mine:
        assert mine and first.run_once() is None
    assert first.run_once() is not None  # released again


def test_each_run_deletes_a_bounded_batch(tmp_path):
    settings = Settings(output_dir=tmp_path / "outputs", data_dir=tmp_path / "data", output_ttl_h=1.0)
    store = SqliteJobStore(tmp_path / "data" / "requests.sqlite3")
    store.open()
    storage = LocalStorage(settings.output_dir, settings.data_dir / "inputs")
    storage.open()
    old = time.time() - 2 * 3600
    for i in range(7):
        path = Path(storage.put_bytes(f"outputs/rest/{i}.mp4", b"x"))
        os.utime(path, (old, old))
    queued = Job("waiting", "k", "rest", "m", {}, {}, storage.put_bytes("inputs/waiting.png", b"png"))
    store.add(queued)
    os.utime(queued.input_path, (old, old))
    sweeper = cleanup.Sweeper(store, storage, settings, batch=3)
    counts = [sweeper.run_once()["outputs"] for _ in range(4)]
    assert counts == [3, 3, 1, 0] and Path(queued.input_path).exists()  # a queued job's input stays
    store.close()


def test_the_pause_follows_the_shortest_retention():
    assert cleanup.pause_s(Settings()) == cleanup.SWEEP_MAX_S  # 24 h outputs: every 10 min
    assert cleanup.pause_s(Settings(output_ttl_h=0.1, history_ttl_h=0)) == 36.0
    assert cleanup.pause_s(Settings(output_ttl_h=1 / 3600)) == cleanup.SWEEP_MIN_S


@pytest.mark.parametrize("role", ["all", "api", "worker"])
def test_every_role_sweeps_on_its_own_timer(tmp_path, role):
    """Server.start/stop (wan_demo/server.py) own the sweeper in each role: it deletes an expired
    output with no job submitted (no worker, no request), and stop() ends its thread."""
    from ui_server import app_settings

    from wan_demo.server import build

    server = build(app_settings(tmp_path, role=role, output_ttl_h=1 / 3600))
    server.start()
    try:
        old = time.time() - 60
        expired_file = Path(server.jobs.storage.put_bytes("outputs/rest/left-over.mp4", b"x"))
        os.utime(expired_file, (old, old))
        deadline = time.monotonic() + 60  # the first run comes after SWEEP_MIN_S here (1 s)
        # the run counts once it has finished, a moment after the file goes: wait for both
        while (expired_file.exists() or server.sweeper.runs < 1) and time.monotonic() < deadline:
            time.sleep(0.1)  # poll for the file's removal, the state this test waits on
        assert not expired_file.exists() and server.sweeper.runs >= 1
        # start() loads no model (launch() does, in the background): the sweeper runs without a worker
        assert server.worker is None and (server.loader is None) == (role == "api")
        assert (server.rest is None) == (role == "worker")
        thread = server.sweeper._thread
        assert thread is not None and thread.is_alive()
    finally:
        server.stop()
    assert not thread.is_alive() and server.sweeper._thread is None


OUTPUT_TTL_S, HISTORY_TTL_S = 2.0, 4.0
SUBMIT_EVERY_S, SUBMIT_FOR_S = 0.5, 14.0  # 2 submits/s; a tiny job takes ~1-2 s (idle): the queue grows
SUBMIT_AT_MOST_S = 60.0  # a busy machine finishes fewer jobs: go on until enough have expired
KINDS = ("video gone", "input gone", "row gone")


def test_outputs_inputs_and_keys_expire_under_steady_load(tmp_path):
    png = b64_image(make_image(96, 64))
    changes = dict(api_keys=KEY_A, submits_per_min=0, queue_max_size=200, max_active_per_key=200,
                   output_ttl_h=OUTPUT_TTL_S / 3600, history_ttl_h=HISTORY_TTL_S / 3600)  # fmt: skip
    with running_app(tmp_path, **changes) as app, httpx.Client(base_url=app.url, timeout=30) as client:
        store, owner = app.server.jobs.store, app.server.rest.keys.owner_of(f"Bearer {KEY_A}")
        sent: list[tuple[str, str]] = []  # (request_id, Idempotency-Key)
        seen: dict[str, dict] = {}  # request_id -> what was observed about it
        queue_sizes: list[int] = []
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < SUBMIT_FOR_S or (
            min(expired(seen).values()) < 2 and elapsed < SUBMIT_AT_MOST_S
        ):
            key = f"steady-{len(sent)}"
            r = client.post(BASE, json=body(png, seed=len(sent)), headers={**auth(), "Idempotency-Key": key})
            assert r.status_code == 200, r.text
            sent.append((r.json()["request_id"], key))
            if elapsed > 3:  # the backlog has built up: from now on it must never run dry
                queue_sizes.append(store.count((Status.QUEUED,)))
            observe(store, owner, sent, seen)
            time.sleep(max(0.0, start + len(sent) * SUBMIT_EVERY_S - time.monotonic()))
        observe(store, owner, sent, seen)
        runs = app.server.sweeper.runs
        replay = client.post(BASE, json=body(png, seed=0), headers={**auth(), "Idempotency-Key": "steady-0"})
        queued_inputs = [store.get(rid).input_path for rid, _ in sent if store.get(rid)
                         and store.get(rid).status == Status.QUEUED]  # fmt: skip
        old_queued = [p for p in queued_inputs if time.time() - os.stat(p).st_mtime > OUTPUT_TTL_S]
        assert old_queued and all(os.path.exists(p) for p in queued_inputs)  # kept however old
    finished = [rid for rid, s in seen.items() if "video" in s]
    print(f"\nsteady load: {len(sent)} submits, {len(finished)} finished, {expired(seen)}, "
          f"sweeper runs {runs}, queued min {min(queue_sizes)} max {max(queue_sizes)}")  # fmt: skip
    assert min(queue_sizes) >= 1 and len(queue_sizes) >= 15  # never empty while the sweeper worked
    assert runs >= 5
    assert min(expired(seen).values()) >= 2, expired(seen)
    assert replay.status_code == 200 and "idempotent-replayed" not in replay.headers  # its key expired
    assert replay.json()["request_id"] != sent[0][0]


def expired(seen: dict[str, dict]) -> dict[str, int]:
    return {what: sum(1 for s in seen.values() if s.get(what)) for what in KINDS}


def observe(store, owner: str, sent: list[tuple[str, str]], seen: dict[str, dict]) -> None:
    """Note, per request, its files while they exist and when they (and its row and key) are gone."""
    for rid, key in sent:
        s = seen.setdefault(rid, {})
        job = store.get(rid)
        if job is None:
            s["row gone"] = "video" in s and store.idempotent(owner, key) is None  # its key went with it
            continue
        if job.status == Status.SUCCESS and job.video_path:
            s.setdefault("video", job.video_path)
            s.setdefault("input", job.input_path)
        if "video" in s:
            s["video gone"] = not os.path.exists(s["video"])
            s["input gone"] = not os.path.exists(s["input"])
