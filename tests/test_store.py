"""SqliteStore: lifecycle transitions, terminal states never change, restart recovery, durability pragmas."""

from __future__ import annotations

import time

import pytest

from wan_demo.core.settings import Settings
from wan_demo.jobs.store_sqlite import (
    CANCELLED,
    FAILED,
    PROCESSING,
    QUEUED,
    SUCCESS,
    SqliteStore,
    StoredRequest,
)
from wan_demo.rest.keys import KeyRing, digest, parse_entry


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "requests.sqlite3")
    yield s
    s.close()


def add(store: SqliteStore, rid: str, owner: str = "a", model: str = "m") -> StoredRequest:
    rec = StoredRequest(rid, owner, model, {"prompt": rid}, f"/in/{rid}.png", created_at=time.time())
    store.add(rec)
    return rec


def test_pragmas_wal_and_full_sync(store):
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_claim_oldest_first_then_finish(store):
    for rid in ("r1", "r2", "r3"):
        add(store, rid)
    assert [store.queue_position(store.get(r)) for r in ("r1", "r2", "r3")] == [1, 2, 3]
    rec = store.claim_next("w1")
    assert (rec.request_id, rec.status, rec.attempts, rec.worker_id) == ("r1", PROCESSING, 1, "w1")
    store.set_progress("r1", 40, started=True)
    assert store.get("r1").progress == 40 and store.get("r1").started_at is not None
    store.finish("r1", SUCCESS, video_path="/o/v.mp4", final_prompt="p!", seed_used=7)
    done = store.get("r1")
    assert (done.status, done.progress, done.seed_used, done.final_prompt) == (SUCCESS, 100, 7, "p!")
    store.finish("r1", FAILED, error_code="x")  # terminal states never change
    store.set_progress("r1", 3)
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
    recs, total = store.list_requests("a")
    assert [r.request_id for r in recs] == ["a2", "a1"] and total == 2  # newest first
    assert [r.request_id for r in store.list_requests("a", model="m")[0]] == ["a1"]
    assert store.list_requests("a", limit=1, offset=1)[0][0].request_id == "a1"
    assert store.count((QUEUED,)) == 3 and store.count((QUEUED, PROCESSING), owner="b") == 1
    rec = store.claim_next("w")
    store.release(rec.request_id)  # worker full: back to the queue, not counted as an attempt
    again = store.get(rec.request_id)
    assert again.status == QUEUED and again.attempts == 0


def test_recover_requeues_once_then_fails(tmp_path):
    path = tmp_path / "r.sqlite3"
    store = SqliteStore(path)
    add(store, "crash")
    add(store, "cancel-me")
    store.claim_next("w")
    store.claim_next("w")
    store.cancel("cancel-me")
    store.close()  # the process "dies" with two requests processing

    store = SqliteStore(path)
    assert store.recover() == {"requeued": 1, "failed": 0, "cancelled": 1}
    assert store.get("crash").status == QUEUED and store.get("cancel-me").status == CANCELLED
    assert store.claim_next("w").attempts == 2
    store.close()

    store = SqliteStore(path)
    assert store.recover() == {"requeued": 0, "failed": 1, "cancelled": 0}
    lost = store.get("crash")
    assert lost.status == FAILED and lost.error_code == "worker_lost"
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
