"""The job store suite, run against both backends (SQLite file, real PostgreSQL server): lifecycle,
terminal states never change, capacity, restart recovery, leases, claims under contention,
workers. Backend-specific checks (pragmas, migrations) follow at the end."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from wan_demo.core.settings import Settings
from wan_demo.jobs.common import CLAIMS_PER_ATTEMPT, Job, QueueFull, Status, TooManyActive, claim_of
from wan_demo.jobs.store.postgres import MIGRATIONS as PG_MIGRATIONS
from wan_demo.jobs.store.postgres import PostgresJobStore
from wan_demo.jobs.store.sqlite import MIGRATIONS, SqliteJobStore
from wan_demo.rest.keys import KeyRing, digest, parse_entry

QUEUED, PROCESSING, SUCCESS = Status.QUEUED, Status.PROCESSING, Status.SUCCESS
FAILED, CANCELLED = Status.FAILED, Status.CANCELLED
LEASE_S = 30.0


@pytest.fixture(params=["sqlite", "postgres"])
def connect(request, tmp_path):
    """connect() -> a newly opened store on the same database (a new process, as far as the store knows)."""
    if request.param == "sqlite":
        path = tmp_path / "requests.sqlite3"

        def make():
            return SqliteJobStore(path)
    else:
        url = request.getfixturevalue("database_url")

        def make():
            return PostgresJobStore(url, pool_size=4)

    opened = []

    def connect():
        store = make()
        store.open()
        opened.append(store)
        return store

    yield connect
    for store in opened:
        store.close()


@pytest.fixture
def store(connect):
    return connect()


def add(store, rid: str, owner: str = "a", model: str = "m", est: float = 1.0, **limits) -> Job:
    job = Job(rid, owner, "rest", model, {"prompt": rid}, {"prompt": rid}, f"/in/{rid}.png", est_seconds=est)
    store.add(job, **limits)
    return job


def test_claim_oldest_first_then_finish(store):
    for rid in ("r1", "r2", "r3"):
        add(store, rid)
    assert [store.queue_ahead(store.get(r)) for r in ("r1", "r2", "r3")] == [(0, 0), (1, 1.0), (2, 2.0)]
    rec = store.claim_next("w1", LEASE_S)
    assert (rec.request_id, rec.status, rec.claims, rec.attempts, rec.worker_id) == (
        "r1",
        PROCESSING,
        1,
        0,
        "w1",
    )
    assert rec.lease_until > time.time() + LEASE_S - 5
    store.set_progress("r1", 40, {"stage": "denoise", "step": 2}, started=True)
    assert store.get("r1").progress == 40 and store.get("r1").started_at is not None
    assert store.get("r1").progress_report.step == 2 and [j.request_id for j in store.running()] == ["r1"]
    assert store.finish("r1", SUCCESS, video_path="/o/v.mp4", final_prompt="p!", seed_used=7)
    done = store.get("r1")
    assert (done.status, done.progress, done.seed_used, done.final_prompt) == (SUCCESS, 100, 7, "p!")
    assert not store.finish("r1", FAILED, error_code="x")  # terminal states never change
    store.set_progress("r1", 3, {})
    assert store.get("r1").status == SUCCESS and store.get("r1").progress == 100
    assert store.cancel("r1") == SUCCESS and store.get("r1").status == SUCCESS
    assert store.get("r1").payload == {"prompt": "r1"} and store.get("nope") is None


def test_cancel_queued_and_processing(store):
    add(store, "q")
    add(store, "p")
    assert store.cancel("q") == QUEUED and store.get("q").status == CANCELLED
    assert store.claim_next("w", LEASE_S).request_id == "p"  # the cancelled one is skipped
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
    assert store.list_jobs("a", status="queued")[1] == 2 and store.list_jobs("a", status="success")[1] == 0
    assert store.count((QUEUED,)) == 3 and store.count((QUEUED, PROCESSING), owner="b") == 1
    rec = store.claim_next("w", LEASE_S)
    store.release(rec.request_id, claim_of(rec))  # worker shutting down: back to the queue, not counted
    again = store.get(rec.request_id)
    assert again.status == QUEUED and again.claims == again.attempts == 0 and again.lease_until is None


def test_capacity_is_checked_in_the_insert(store):
    add(store, "k1", owner="key", queue_max=3, owner_max=2)
    add(store, "k2", owner="key", queue_max=3, owner_max=2)
    with pytest.raises(TooManyActive, match="2 active requests; the limit is 2"):
        add(store, "k3", owner="key", queue_max=3, owner_max=2)
    add(store, "u1", owner="ui", queue_max=3)
    with pytest.raises(QueueFull, match="3 generations are waiting"):
        add(store, "u2", owner="ui", queue_max=3)
    assert store.count((QUEUED,)) == 3 and store.get("k3") is None and store.get("u2") is None


def crash_while_processing(connect, rid: str, ran: bool) -> None:
    """A worker claims `rid` (and reaches its first denoising step if `ran`), then the process dies."""
    store = connect()
    assert store.claim_next("w", LEASE_S).request_id == rid
    store.set_progress(rid, 1, {"stage": "prompt"}, started=True)
    if ran:
        store.set_progress(rid, 5, {"stage": "denoise", "step": 1}, ran=True)
    store.close()


def test_recover_requeues_once_then_fails(connect):
    store = connect()
    add(store, "crash")
    add(store, "cancel-me")
    store.claim_next("w", LEASE_S)
    store.claim_next("w", LEASE_S)
    store.set_progress("crash", 5, {"stage": "denoise"}, ran=True)
    store.cancel("cancel-me")
    store.close()  # the process "dies" with two requests processing

    store = connect()
    assert store.recover() == {"requeued": 1, "failed": 0, "cancelled": 1}
    assert store.get("crash").status == QUEUED and store.get("cancel-me").status == CANCELLED
    crash_while_processing(connect, "crash", ran=True)
    assert store.recover() == {"requeued": 0, "failed": 1, "cancelled": 0}
    lost = store.get("crash")
    assert (lost.status, lost.error_code, lost.attempts) == (FAILED, "worker_lost", 2)
    assert lost.error_message == "the worker stopped while running this request 2 times"


def test_restarts_before_the_first_step_do_not_use_up_attempts(connect):
    """Issue 16: restarts that never reached denoising leave the job queued; only a crash loop
    (claims >= max_attempts x CLAIMS_PER_ATTEMPT) fails it."""
    store = connect()
    add(store, "early")
    for _ in range(2 * CLAIMS_PER_ATTEMPT - 1):
        crash_while_processing(connect, "early", ran=False)
        assert store.recover(max_attempts=2) == {"requeued": 1, "failed": 0, "cancelled": 0}
    crash_while_processing(connect, "early", ran=False)
    assert store.recover(max_attempts=2)["failed"] == 1
    assert (store.get("early").attempts, store.get("early").claims) == (0, 2 * CLAIMS_PER_ATTEMPT)
    assert store.get("early").error_message == (  # issue 27: not "stopped while running 2 times"
        "a worker claimed this request 6 times and stopped each time before the first denoising step"
    )


def test_worker_lost_names_claims_and_runs_truthfully(connect):
    store = connect()
    add(store, "mixed")
    for ran in (False, True, False, True):  # 4 takes, 2 of them reached denoising
        crash_while_processing(connect, "mixed", ran=ran)
        store.recover(max_attempts=2)
    lost = store.get("mixed")
    assert (lost.status, lost.attempts, lost.claims) == (FAILED, 2, 4)
    assert lost.error_message == "the worker stopped while running this request 2 times (claimed 4 times)"


def test_max_attempts_is_a_setting(connect):
    store = connect()
    add(store, "once")
    crash_while_processing(connect, "once", ran=True)
    assert store.recover(max_attempts=1)["failed"] == 1


def test_an_expired_lease_is_reclaimed_and_its_old_claim_writes_nothing(store):
    """A worker that stops renewing loses the job after its lease; the job runs again elsewhere,
    and the first worker's late writes (progress, outcome, release) miss."""
    add(store, "j")
    add(store, "alive")
    first = store.claim_next("w1", 0.2)
    alive = store.claim_next("w2", LEASE_S)
    store.set_progress("j", 5, {"stage": "denoise", "step": 1}, ran=True, claim=claim_of(first))
    assert store.renew("j", claim_of(first), 0.2) is not None
    assert store.recover(expired_only=True) == {"requeued": 0, "failed": 0, "cancelled": 0}
    time.sleep(0.4)
    assert store.recover(expired_only=True) == {"requeued": 1, "failed": 0, "cancelled": 0}
    assert store.get("alive").status == PROCESSING  # its lease holds: untouched
    second = store.claim_next("w2", LEASE_S)
    assert (second.request_id, second.claims, second.worker_id) == ("j", 2, "w2")
    assert store.renew("j", claim_of(first), LEASE_S) is None  # w1 learns it lost the job
    store.set_progress("j", 90, {"stage": "encode"}, claim=claim_of(first))
    assert not store.finish("j", SUCCESS, claim=claim_of(first), video_path="/stale.mp4")
    store.release("j", claim_of(first))
    now = store.get("j")
    assert (now.status, now.worker_id, now.progress, now.video_path) == (PROCESSING, "w2", 0, None)
    assert store.finish("j", SUCCESS, claim=claim_of(second), video_path="/v.mp4")
    assert store.finish("alive", SUCCESS, claim=claim_of(alive))


def test_lease_expiry_uses_the_same_attempt_rule(store):
    add(store, "x")
    for _ in range(2):
        job = store.claim_next("w", 0.05)
        store.set_progress("x", 5, {"stage": "denoise"}, ran=True, claim=claim_of(job))
        time.sleep(0.15)
        store.recover(max_attempts=2, expired_only=True)
    lost = store.get("x")
    assert (lost.status, lost.error_code, lost.attempts, lost.lease_until) == (FAILED, "worker_lost", 2, None)


def test_concurrent_claims_take_each_job_exactly_once(connect):
    """Four workers (own connections) race over 40 jobs: every job claimed once, none twice."""
    store = connect()
    for i in range(40):
        add(store, f"j{i:02d}")
    taken: dict[str, list[str]] = {}
    lock = threading.Lock()

    def work(name: str) -> None:
        mine = connect()
        while (job := mine.claim_next(name, LEASE_S)) is not None:
            with lock:
                taken.setdefault(job.request_id, []).append(name)
            mine.finish(job.request_id, SUCCESS, claim=claim_of(job))

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(taken) == [f"j{i:02d}" for i in range(40)]
    assert all(len(names) == 1 for names in taken.values()), taken
    assert store.count((SUCCESS,)) == 40 and all(store.get(r).claims == 1 for r in taken)


def test_workers_beat_and_are_listed(store):
    store.beat_worker("gpu-a", {"banner": "A", "max_area": 100})
    store.beat_worker("gpu-b", {"banner": "B"})
    store.beat_worker("gpu-a", {"banner": "A2", "max_area": 200})
    found = {w.worker_id: w for w in store.workers()}
    assert set(found) == {"gpu-a", "gpu-b"} and found["gpu-a"].info == {"banner": "A2", "max_area": 200}
    assert all(0 <= w.age_s < 60 for w in found.values())
    assert store.workers()[0].worker_id == "gpu-a"  # most recently seen first


def test_finished_before_and_delete(store):
    add(store, "old")
    add(store, "new")
    store.cancel("old")
    cutoff = time.time() + 1
    assert [j.request_id for j in store.finished_before(cutoff)] == ["old"]
    assert store.delete(["old", "missing"]) == 1 and store.get("old") is None


# -- backend specifics ---------------------------------------------------------------------------
def test_sqlite_pragmas_wal_and_full_sync(tmp_path):
    store = SqliteJobStore(tmp_path / "r.sqlite3")
    store.open()
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    store.close()


def test_constructing_opens_nothing(tmp_path):
    store = SqliteJobStore(tmp_path / "sub" / "jobs.sqlite3")
    assert not (tmp_path / "sub").exists()
    with pytest.raises(RuntimeError, match="not open"):
        store.get("x")
    with pytest.raises(RuntimeError, match="not open"):
        PostgresJobStore("postgresql://nobody@127.0.0.1:1/none").get("x")


def test_a_first_landing_sqlite_database_is_migrated(tmp_path):
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
    store = SqliteJobStore(path)
    store.open()
    job = store.get("r0")
    assert job.params == {"prompt": "old", "video_length_s": 10, "seed": 4, "prompt_extend": True}
    assert (job.source, job.payload, job.status, job.lease_until) == ("rest", payload, QUEUED, None)
    store.close()


def test_postgres_schema_is_versioned_and_migrated_once(database_url):
    """Nodes starting together: one migrates under the advisory lock, the others see the version."""
    import psycopg

    stores = [PostgresJobStore(database_url, pool_size=1) for _ in range(3)]
    threads = [threading.Thread(target=s.open) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT version FROM wan_demo_schema").fetchall() == [(len(PG_MIGRATIONS),)]
    add(stores[0], "x")
    assert stores[2].get("x").status == QUEUED
    for s in stores:
        s.close()


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
    store.claim_next("w", LEASE_S)
    store.finish("r", FAILED, error_code="x", error_message="bad \udcff", final_prompt="\ud800!")
    done = store.get("r")
    assert (done.error_message, done.final_prompt, done.damage) == ("bad \ufffd", "\ufffd!", None)


def test_live_preview_location_is_kept_while_processing_and_cleared_at_the_end(store):
    add(store, "r1")
    add(store, "r2")
    claim = claim_of(store.claim_next("w", LEASE_S))
    store.set_progress("r1", 10, {"stage": "denoise"}, claim=claim, preview="/out/rest/r1.preview.1.webp")
    assert store.get("r1").preview_path == "/out/rest/r1.preview.1.webp"
    store.set_progress("r1", 20, {"stage": "denoise"}, claim=claim)  # no preview: the last one stays
    assert store.get("r1").preview_path == "/out/rest/r1.preview.1.webp"
    store.finish("r1", SUCCESS, claim, video_path="/out/rest/r1.mp4")
    assert store.get("r1").preview_path is None
    second = claim_of(store.claim_next("w", LEASE_S))
    store.set_progress("r2", 10, {"stage": "denoise"}, claim=second, preview="/out/rest/r2.preview.1.webp")
    store.release("r2", second)  # back to the queue: its preview is gone with the run
    assert store.get("r2").preview_path is None


# --- batches (issue 24): one submit, several jobs, one transaction ------------------------------
def batch(rids: list[str], owner: str = "key", batch_id: str = "b1") -> list[Job]:
    return [
        Job(r, owner, "rest", "m", {"prompt": r}, {"prompt": r}, f"/in/{r}.png", batch_id=batch_id)
        for r in rids
    ]


def test_a_batch_is_queued_whole_and_listed_by_its_id(store):
    store.add_many(batch(["b-1", "b-2", "b-3"]), queue_max=4, owner_max=4)
    add(store, "alone", owner="key")
    jobs, total = store.list_jobs("key", None, None, 10, 0, batch_id="b1")
    assert total == 3 and sorted(j.request_id for j in jobs) == ["b-1", "b-2", "b-3"]
    assert {j.batch_id for j in jobs} == {"b1"} and store.get("alone").batch_id is None
    assert store.list_jobs("key", None, None, 10, 0)[1] == 4  # no filter: everything of the owner
    assert store.list_jobs("other", None, None, 10, 0, batch_id="b1")[1] == 0  # never another's


@pytest.mark.parametrize(("limits", "error"), [
    (dict(queue_max=4), QueueFull),  # 2 waiting + 3 > 4
    (dict(owner_max=4), TooManyActive),  # 2 active + 3 > 4 for this key
])  # fmt: skip
def test_a_batch_over_a_limit_is_refused_whole_never_half_queued(store, limits, error):
    add(store, "k1", owner="key")
    add(store, "k2", owner="key")
    with pytest.raises(error, match="this submit adds 3"):
        store.add_many(batch(["x-1", "x-2", "x-3"]), **limits)
    assert store.count((QUEUED,)) == 2 and all(store.get(r) is None for r in ("x-1", "x-2", "x-3"))
    store.add_many(batch(["y-1", "y-2"]), **limits)  # what fits goes in
    assert store.count((QUEUED,)) == 4


def test_fair_queueing_counts_each_job_of_a_batch(store):
    """Round-robin over owners: a batch of 3 is three turns, so another owner's single job runs
    after the batch's first, not after all three."""
    store.add_many(batch(["b-1", "b-2", "b-3"], owner="big"))
    add(store, "s-1", owner="small")
    order = [store.claim_next("w", LEASE_S).request_id for _ in range(4)]
    assert order == ["b-1", "s-1", "b-2", "b-3"]
