"""The job store's operations half on both backends (jobs/store/sql_ops.py, listener.py): the shared
moving-window rate limit (two store objects stand for two API nodes on one database), queue figures
for /metrics, and wake-ups (NOTIFY heard by another connection at commit; SQLite in-process)."""

from __future__ import annotations

import threading
import time

import pytest

from wan_demo.jobs.common import Job, Status
from wan_demo.jobs.store.postgres import PostgresJobStore
from wan_demo.jobs.store.sql_ops import JOBS_CHANNEL, OUTBOX_CHANNEL
from wan_demo.jobs.store.sqlite import SqliteJobStore
from wan_demo.rest.ratelimit import QUEUED, REFUSED, Budget, SubmitLimit


@pytest.fixture(params=["sqlite", "postgres"])
def two_nodes(request, tmp_path):
    """Two open stores on one database, as two processes would hold them."""
    if request.param == "sqlite":
        make = lambda: SqliteJobStore(tmp_path / "q.sqlite3")  # noqa: E731
    else:
        url = request.getfixturevalue("database_url")
        make = lambda: PostgresJobStore(url, pool_size=2)  # noqa: E731
    stores = [make(), make()]
    for s in stores:
        s.open()
    yield stores
    for s in stores:
        s.close()


def job(rid: str, owner: str = "key_a", webhook: dict | None = None) -> Job:
    return Job(rid, owner, "rest", "m", {"prompt": "x"}, {"prompt": "x"}, "/in/x.png", webhook=webhook or {})


def test_two_nodes_share_one_moving_window(two_nodes):
    a, b = two_nodes
    hits = [(a if i % 2 else b).rate_acquire("submit/key_a", 5, 60) for i in range(10)]
    assert hits == [True] * 5 + [False] * 5  # 5 in total, not 5 per node
    start, count = b.rate_window("submit/key_a", 60)
    assert count == 5 and abs(start - time.time()) < 30
    assert a.rate_acquire("submit/key_b", 5, 60)  # another key has its own window
    assert a.rate_window("nobody", 60)[1] == 0
    a.rate_clear("submit/key_a")
    assert b.rate_acquire("submit/key_a", 5, 60)


def test_the_window_moves(two_nodes):
    a, b = two_nodes
    assert [a.rate_acquire("k", 2, 1.0) for _ in range(3)] == [True, True, False]
    time.sleep(1.1)  # the first hits leave the 1 s window
    assert [b.rate_acquire("k", 2, 1.0) for _ in range(3)] == [True, True, False]


def test_concurrent_hits_never_exceed_the_limit(two_nodes):
    """Threads on both nodes hit one key at once: the per-key lock keeps the count exact."""
    results: list[bool] = []
    lock = threading.Lock()

    def hit(store):
        for _ in range(5):
            ok = store.rate_acquire("busy", 7, 60)
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=hit, args=(s,)) for s in two_nodes for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and sum(results) == 7


def test_submit_limit_through_limits_counts_in_the_store(two_nodes):
    """rest/ratelimit.py's SubmitLimit on each node: 5 queued jobs per minute from one key across both
    (a batch counts its videos), refusals in their own budget, in the same store."""
    nodes = [SubmitLimit(5, store).start() for store in two_nodes]
    answers = []
    for i in range(6):
        ticket = nodes[i % 2].admit("key_a")
        if isinstance(ticket, Budget):
            answers.append((False, nodes[i % 2].headers(ticket, "key_a", limited=True)))
            continue
        cost = 2 if i == 1 else 1
        if not nodes[i % 2].charge(ticket, cost):
            answers.append((False, nodes[i % 2].settle(ticket, REFUSED)))
            continue
        answers.append((True, nodes[i % 2].settle(ticket, QUEUED)))
    assert [ok for ok, _ in answers] == [True] * 4 + [False] * 2
    assert [h["RateLimit-Remaining"] for _, h in answers] == ["4", "2", "1", "0", "0", "0"]
    assert 1 <= int(answers[-1][1]["Retry-After"]) <= 60
    refused = nodes[1].headers(nodes[1].refused, "key_a")
    assert refused["RateLimit-Limit"] == "50" and refused["RateLimit-Remaining"] == "50"


def test_submits_in_flight_on_two_nodes_hold_their_slots(two_nodes):
    """Admitting is holding, in the shared window: with a budget of 2, four submits in flight at once
    on two nodes get 2 tickets in total (the audit of issue 27 saw all 4 admitted), and a batch's
    videos are held when the body is read. A refusal or a server failure gives its submit slot back;
    a queued submit keeps it."""
    nodes = [SubmitLimit(2, store).start() for store in two_nodes]
    held = [nodes[i % 2].admit("key_a") for i in range(4)]  # none settled yet
    assert [isinstance(t, Budget) for t in held] == [False, False, True, True]
    assert (
        held[2] is nodes[0].submits
        and nodes[1].headers(nodes[1].submits, "key_a")["RateLimit-Remaining"] == "0"
    )
    assert nodes[1].settle(held[1], REFUSED)["RateLimit-Remaining"] == "1"  # its slot is back
    nodes[0].settle(held[0], None)  # the server's fault: counts nowhere
    refused = nodes[0].headers(nodes[0].refused, "key_a")
    assert refused["RateLimit-Remaining"] == "19"  # only the refusal counts there
    batch = nodes[1].admit("key_a")
    assert nodes[1].charge(batch, 2) and isinstance(nodes[0].admit("key_a"), Budget)  # 2 held
    assert nodes[1].settle(batch, QUEUED)["RateLimit-Remaining"] == "0"
    late = nodes[0].admit("key_b")  # another key: its own window
    assert not nodes[0].charge(late, 3) and late.spent is nodes[0].submits  # more than fits
    assert nodes[0].settle(late, REFUSED)["RateLimit-Remaining"] == "2"


def test_stats_for_metrics(two_nodes):
    a, _ = two_nodes
    assert a.stats() == {"jobs": {}, "oldest_queued_s": 0.0, "outbox": 0}
    a.add(job("r1"))
    a.add(job("r2", webhook={"url": "https://example.com/h", "events": ["processing"], "base": ""}))
    time.sleep(0.05)
    claimed = a.claim_next("w1", 30)
    stats = a.stats()
    assert stats["jobs"] == {"queued": 1, "processing": 1}
    assert 0 < stats["oldest_queued_s"] < 30
    assert stats["outbox"] == (1 if claimed.request_id == "r2" else 0)
    a.ping()


def test_notifications_wake_the_other_node(database_url):
    """PostgreSQL: a submit, a cancel of a running job and a new outbox row on one node are heard
    by the other node's listener at commit (nothing is heard for a write that rolls back)."""
    writer, listener = PostgresJobStore(database_url, 2), PostgresJobStore(database_url, 2)
    writer.open()
    listener.open()
    heard: list[tuple[str, str]] = []
    got = threading.Event()
    listener.subscribe(lambda c, p: (heard.append((c, p)), got.set()))
    try:
        deadline = time.monotonic() + 20
        while not listener.wakes_other_processes:
            assert time.monotonic() < deadline, "the listener never connected"
            time.sleep(0.05)
        writer.add(job("n1", webhook={"url": "https://example.com/h", "events": ["processing"], "base": ""}))
        claimed = writer.claim_next("w1", 30)  # emits the `processing` webhook event: outbox
        writer.cancel(claimed.request_id)
        deadline = time.monotonic() + 10
        while len({c for c, _ in heard}) < 2 or (JOBS_CHANNEL, "cancel:n1") not in heard:
            assert time.monotonic() < deadline, heard
            time.sleep(0.02)
        assert (JOBS_CHANNEL, "queued") in heard and (OUTBOX_CHANNEL, "") in heard
        assert writer.transactions > 0 and writer.get("n1").status == Status.PROCESSING
    finally:
        writer.close()
        listener.close()


def test_sqlite_wakes_its_own_process_after_commit(tmp_path):
    store = SqliteJobStore(tmp_path / "q.sqlite3")
    store.open()
    heard: list[tuple[str, str]] = []
    store.subscribe(lambda c, p: heard.append((c, p)))
    store.add(job("s1"))
    with pytest.raises(Exception):  # noqa: B017  # a failing insert (duplicate id) wakes nobody
        store.add(job("s1"))
    assert heard == [(JOBS_CHANNEL, "queued")]
    assert not store.wakes_other_processes  # other processes on the file still poll
    store.close()


def test_the_listener_comes_back_after_a_database_restart(postgres):
    """While LISTEN is down the store says so (waiters poll at their old pace); once it reconnects,
    subscribers are told to look once ("" channel) and notifications flow again."""
    from bench.services import TempPostgres

    server = TempPostgres().start()  # its own server: this test restarts it
    try:
        url = server.create_database("relisten")
        writer, listener = PostgresJobStore(url, 1, timeout_s=2), PostgresJobStore(url, 1, timeout_s=2)
        writer.open()
        listener.open()
        heard: list[tuple[str, str]] = []
        listener.subscribe(lambda c, p: heard.append((c, p)))
        wait_for(lambda: listener.wakes_other_processes)
        server.server("stop")
        wait_for(lambda: not listener.wakes_other_processes)
        server.server("start")
        wait_for(lambda: listener.wakes_other_processes, 60)
        assert heard.count(("", "")) == 2  # at the first connect and after the reconnect
        wait_for(lambda: _add(writer, job("after")), 30)  # the writer's pool reconnects too
        wait_for(lambda: (JOBS_CHANNEL, "queued") in heard)
        writer.close()
        listener.close()
    finally:
        server.stop()


def _add(store, j) -> bool:
    from wan_demo.jobs.common import StoreUnavailable

    try:
        store.add(j)
    except StoreUnavailable:
        return False
    return True


def wait_for(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)
