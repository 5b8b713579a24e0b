"""SqliteJobStore: lifecycle, terminal states never change, restart recovery, pragmas, migrations."""

from __future__ import annotations

import json
import sqlite3

import pytest

from wan_demo.core.settings import Settings
from wan_demo.jobs.common import CLAIMS_PER_ATTEMPT, Job, Status
from wan_demo.jobs.store_sqlite import MIGRATIONS, SqliteJobStore
from wan_demo.rest.keys import KeyRing, digest, parse_entry

QUEUED, PROCESSING, SUCCESS = Status.QUEUED, Status.PROCESSING, Status.SUCCESS
FAILED, CANCELLED = Status.FAILED, Status.CANCELLED


def open_store(path) -> SqliteJobStore:
    store = SqliteJobStore(path)
    store.open()
    return store


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "requests.sqlite3")
    yield s
    s.close()


def add(store: SqliteJobStore, rid: str, owner: str = "a", model: str = "m", est: float = 1.0) -> Job:
    job = Job(rid, owner, "rest", model, {"prompt": rid}, {"prompt": rid}, f"/in/{rid}.png", est_seconds=est)
    store.add(job)
    return job


def test_pragmas_wal_and_full_sync(store):
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_constructing_opens_nothing(tmp_path):
    store = SqliteJobStore(tmp_path / "sub" / "jobs.sqlite3")
    assert not (tmp_path / "sub").exists()
    with pytest.raises(RuntimeError, match="not open"):
        store.get("x")


def test_a_first_landing_database_is_migrated(tmp_path):
    """Rows written by the REST-only schema (version 1) survive, with params derived from payload."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    payload = {"prompt": "old", "video_length": 10, "seed": 4, "prompt_extend": True, "path_input_image": "x"}
    db.execute(
        "INSERT INTO requests (request_id, owner, model, payload, input_path, status, created_at, updated_at,"
        " queued_at) VALUES ('r0', 'k', 'm', ?, '/in/r0.png', 'queued', 1, 1, 1)",
        (json.dumps(payload),),
    )
    db.commit()
    db.close()
    store = open_store(path)
    job = store.get("r0")
    assert job.params == {"prompt": "old", "video_length_s": 10, "seed": 4, "prompt_extend": True}
    assert (job.source, job.payload, job.status) == ("rest", payload, QUEUED)
    store.close()


def test_claim_oldest_first_then_finish(store):
    for rid in ("r1", "r2", "r3"):
        add(store, rid)
    assert [store.queue_ahead(store.get(r)) for r in ("r1", "r2", "r3")] == [(0, 0), (1, 1.0), (2, 2.0)]
    rec = store.claim_next("w1")
    assert (rec.request_id, rec.status, rec.claims, rec.attempts, rec.worker_id) == (
        "r1",
        PROCESSING,
        1,
        0,
        "w1",
    )
    store.set_progress("r1", 40, {"stage": "denoise", "step": 2}, started=True)
    assert store.get("r1").progress == 40 and store.get("r1").started_at is not None
    assert store.get("r1").progress_report.step == 2 and [j.request_id for j in store.running()] == ["r1"]
    store.finish("r1", SUCCESS, video_path="/o/v.mp4", final_prompt="p!", seed_used=7)
    done = store.get("r1")
    assert (done.status, done.progress, done.seed_used, done.final_prompt) == (SUCCESS, 100, 7, "p!")
    store.finish("r1", FAILED, error_code="x")  # terminal states never change
    store.set_progress("r1", 3, {})
    assert store.get("r1").status == SUCCESS and store.get("r1").progress == 100
    assert store.cancel("r1") == SUCCESS and store.get("r1").status == SUCCESS


def test_cancel_queued_and_processing(store):
    add(store, "q")
    add(store, "p")
    assert store.cancel("q") == QUEUED and store.get("q").status == CANCELLED
    assert store.claim_next("w").request_id == "p"  # the cancelled one is skipped
    assert store.cancel("p") == PROCESSING
    assert store.get("p").status == PROCESSING and store.get("p").cancel_requested
    assert store.cancel("missing") is None


def test_list_count_and_release(store):
    for rid, owner, model in [("a1", "a", "m"), ("a2", "a", "other"), ("b1", "b", "m")]:
        add(store, rid, owner, model)
    recs, total = store.list_jobs("a")
    assert [r.request_id for r in recs] == ["a2", "a1"] and total == 2  # newest first
    assert [r.request_id for r in store.list_jobs("a", model="m")[0]] == ["a1"]
    assert store.list_jobs("a", limit=1, offset=1)[0][0].request_id == "a1"
    assert store.count((QUEUED,)) == 3 and store.count((QUEUED, PROCESSING), owner="b") == 1
    rec = store.claim_next("w")
    store.release(rec.request_id)  # worker shutting down: back to the queue, not counted
    again = store.get(rec.request_id)
    assert again.status == QUEUED and again.claims == again.attempts == 0


def crash_while_processing(path, rid: str, ran: bool) -> None:
    """A worker claims `rid` (and reaches its first denoising step if `ran`), then the process dies."""
    store = open_store(path)
    assert store.claim_next("w").request_id == rid
    store.set_progress(rid, 1, {"stage": "prompt"}, started=True)
    if ran:
        store.set_progress(rid, 5, {"stage": "denoise", "step": 1}, ran=True)
    store.close()


def test_recover_requeues_once_then_fails(tmp_path):
    path = tmp_path / "r.sqlite3"
    store = open_store(path)
    add(store, "crash")
    add(store, "cancel-me")
    store.claim_next("w")
    store.claim_next("w")
    store.set_progress("crash", 5, {"stage": "denoise"}, ran=True)
    store.cancel("cancel-me")
    store.close()  # the process "dies" with two requests processing

    store = open_store(path)
    assert store.recover() == {"requeued": 1, "failed": 0, "cancelled": 1}
    assert store.get("crash").status == QUEUED and store.get("cancel-me").status == CANCELLED
    store.close()
    crash_while_processing(path, "crash", ran=True)

    store = open_store(path)
    assert store.recover() == {"requeued": 0, "failed": 1, "cancelled": 0}
    lost = store.get("crash")
    assert (lost.status, lost.error_code, lost.attempts) == (FAILED, "worker_lost", 2)
    assert "2 times" in lost.error_message
    store.close()


def test_restarts_before_the_first_step_do_not_use_up_attempts(tmp_path):
    """Issue 16: two restarts in a row that never reached denoising leave the job queued; only a
    crash loop (claims >= max_attempts x CLAIMS_PER_ATTEMPT) fails it."""
    path = tmp_path / "r.sqlite3"
    store = open_store(path)
    add(store, "early")
    store.close()
    for _ in range(2 * CLAIMS_PER_ATTEMPT - 1):
        crash_while_processing(path, "early", ran=False)
        store = open_store(path)
        assert store.recover(max_attempts=2) == {"requeued": 1, "failed": 0, "cancelled": 0}
        store.close()
    crash_while_processing(path, "early", ran=False)
    store = open_store(path)
    assert store.recover(max_attempts=2)["failed"] == 1
    assert (store.get("early").attempts, store.get("early").claims) == (0, 2 * CLAIMS_PER_ATTEMPT)
    store.close()


def test_max_attempts_is_a_setting(tmp_path):
    path = tmp_path / "r.sqlite3"
    store = open_store(path)
    add(store, "once")
    store.close()
    crash_while_processing(path, "once", ran=True)
    store = open_store(path)
    assert store.recover(max_attempts=1)["failed"] == 1
    store.close()


def test_keys_plain_and_hashed(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text(f"# comment\n{'sha256:' + digest('from-file')}\n")
    ring = KeyRing.from_settings(Settings(api_keys="plain-1, ", api_key_file=str(key_file)))
    assert ring.enabled
    assert ring.owner_of("Bearer plain-1") == digest("plain-1")[:16]
    assert ring.owner_of("bearer from-file") == digest("from-file")[:16]
    for bad in (None, "", "Bearer", "Bearer wrong", "plain-1", "Basic plain-1"):
        assert ring.owner_of(bad) is None
    assert not KeyRing.from_settings(Settings()).enabled
    with pytest.raises(ValueError, match="64 hex"):
        parse_entry("sha256:abc")


def test_the_store_writes_only_text_utf8_can_encode(store):
    """A lone surrogate in server-made text (an error quoting input, an extended prompt) is stored as
    U+FFFD: storing it raw would fail the write, or poison every later read."""
    add(store, "r")
    store.add(Job("s", "a", "rest", "m", {}, {"prompt": "cat \ud800"}, "/in/s.png"))
    assert store.get("s").payload == {"prompt": "cat \ufffd"} and store.get("s").damage is None
    store.claim_next("w")
    store.finish("r", FAILED, error_code="x", error_message="bad \udcff", final_prompt="\ud800!")
    done = store.get("r")
    assert (done.error_message, done.final_prompt, done.damage) == ("bad \ufffd", "\ufffd!", None)
