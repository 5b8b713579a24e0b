# ruff: noqa: F811  # the store fixtures come from test_store.py and are parameters here
"""Store suite, both backends (SQLite file, real PostgreSQL): the round-robin pick and the queue
positions that simulate it, idempotency keys, the webhook outbox written with each status change."""

from __future__ import annotations

import random
import time

import pytest
from test_store import LEASE_S, add, connect, store  # noqa: F401  # fixtures over both backends

from wan_demo.jobs.common import IDEMPOTENCY_S, IdempotentReplay, Job, Status, claim_of

HOOK = {"url": "https://example.com/hook", "events": ["processing", "progress", "completed"], "base": "x"}
BOOKENDS = {**HOOK, "events": ["processing", "completed"]}


def positions(store, ids: list[str]) -> dict[str, int]:
    """Each queued job's 0-based place under the pick rule, as queue_ahead reports it."""
    return {rid: store.queue_ahead(store.get(rid))[0] for rid in ids if store.get(rid).status == "queued"}


def drain(store) -> list[str]:
    order = []
    while (job := store.claim_next("w", LEASE_S)) is not None:
        order.append(job.request_id)
        store.finish(job.request_id, Status.SUCCESS, claim=claim_of(job))
    return order


def test_one_busy_owner_does_not_delay_another_owners_first_job(store):
    for i in range(10):
        add(store, f"a{i}", owner="A")
    first = store.claim_next("w", LEASE_S)
    add(store, "b0", owner="B")
    add(store, "u0", owner="ui")
    assert first.request_id == "a0"
    predicted = positions(store, [f"a{i}" for i in range(1, 10)] + ["b0", "u0"])
    assert predicted["b0"] == 0 and predicted["u0"] == 1 and predicted["a1"] == 2
    store.finish("a0", Status.SUCCESS, claim=claim_of(first))
    order = drain(store)
    assert order[:4] == ["b0", "u0", "a1", "a2"]
    assert order == sorted(predicted, key=predicted.get)  # the positions were the real order


def test_positions_match_the_claims_for_random_queues(store):
    """Random owners, arrivals and claims: at every step the reported positions are exactly the
    order in which the remaining jobs are then claimed."""
    rng = random.Random(7)
    queued: list[str] = []
    for i in range(30):
        rid = f"j{i:02d}"
        add(store, rid, owner=rng.choice("ABCD" if i < 20 else "AE"), est=float(rng.randint(1, 9)))
        queued.append(rid)
        if rng.random() < 0.3:
            job = store.claim_next("w", LEASE_S)
            store.finish(job.request_id, Status.SUCCESS, claim=claim_of(job))
    predicted = positions(store, queued)
    assert sorted(predicted.values()) == list(range(len(predicted)))  # a strict order
    order = drain(store)
    assert order == sorted(predicted, key=predicted.get)


def test_positions_count_seconds_of_the_jobs_ahead(store):
    add(store, "a0", owner="A", est=10.0)
    add(store, "a1", owner="A", est=20.0)
    add(store, "b0", owner="B", est=5.0)
    # A's first, then B's (round 0): another owner's jobs count at that owner's average estimate
    assert store.queue_ahead(store.get("b0")) == (1, 15.0)
    assert store.queue_ahead(store.get("a1")) == (2, 15.0)  # own a0 exactly (10) + B's one (5)


def test_an_idempotency_key_returns_its_first_request(store):
    add(store, "r1", owner="A", idempotency=("k1", "hash-1"))
    assert store.idempotent("A", "k1") == ("r1", "hash-1")
    assert store.idempotent("B", "k1") is None  # scoped per owner
    for body_hash, same in (("hash-1", True), ("hash-2", False)):
        with pytest.raises(IdempotentReplay) as err:
            add(store, "r2", owner="A", idempotency=("k1", body_hash))
        assert (err.value.request_id, err.value.same_body) == ("r1", same)
    assert store.get("r2") is None and store.count((Status.QUEUED,)) == 1
    add(store, "r3", owner="B", idempotency=("k1", "hash-1"))  # another key's namespace
    assert store.forget_keys(time.time() + IDEMPOTENCY_S) == 2 and store.idempotent("A", "k1") is None


def test_every_status_change_queues_its_webhook_event(store):
    store.add(Job("h", "A", "rest", "m", {}, {}, "/in/h.png", webhook=HOOK))
    add(store, "plain", owner="A")
    add(store, "queued-hook", owner="B")
    store.cancel("plain")
    job = store.claim_next("w", LEASE_S)
    for percent in (2, 5, 12, 15, 31, 98):
        store.set_progress("h", percent, {"stage": "denoise"}, claim=claim_of(job))
    store.finish("h", Status.SUCCESS, claim=claim_of(job), video_path="/v.mp4")
    seen = []
    while (d := store.claim_delivery(30.0)) is not None:
        seen.append((d.event, d.job.status, d.job.progress))
        store.record_delivery(d.event_id, 204, None, None)
    assert seen == [
        ("processing", "processing", 0), ("progress", "processing", 12), ("progress", "processing", 31),
        ("progress", "processing", 98), ("completed", "success", 100),
    ]  # fmt: skip
    state = store.webhook_state("h")
    assert (state["delivered"], state["pending"], state["attempts"], state["last_status"]) == (5, 0, 5, 204)
    assert store.webhook_state("plain")["attempts"] == 0


def test_deliveries_retry_in_order_and_give_up(store):
    store.add(Job("h", "A", "rest", "m", {}, {}, "/in/h.png", webhook=BOOKENDS))
    job = store.claim_next("w", LEASE_S)
    store.finish("h", Status.FAILED, claim=claim_of(job), error_code="x")
    first = store.claim_delivery(30.0)
    assert first.event == "processing" and store.claim_delivery(30.0) is None  # leased; completed waits
    store.record_delivery(first.event_id, 503, "HTTP 503", retry_in=0.2)
    state = store.webhook_state("h")
    assert (state["last_status"], state["last_error"], state["attempts"]) == (503, "HTTP 503", 1)
    assert state["pending"] == 2
    assert state["next_attempt_at"] > time.time()
    assert store.claim_delivery(30.0) is None  # backing off; the later event keeps its order
    time.sleep(0.35)
    again = store.claim_delivery(30.0)
    assert (again.event_id, again.attempts) == (first.event_id, 1)
    store.record_delivery(again.event_id, None, "timeout", retry_in=None)  # gave up
    last = store.claim_delivery(30.0)
    assert last.event == "completed" and last.job.error_code == "x"
    store.record_delivery(last.event_id, 200, None, None)
    state = store.webhook_state("h")
    assert (state["failed"], state["delivered"], state["pending"]) == (1, 1, 0)
    assert state["next_attempt_at"] is None


def test_recovery_and_queued_cancel_report_completed(connect):
    store = connect()
    store.add(Job("lost", "A", "rest", "m", {}, {}, "/in/l.png", webhook={**HOOK, "events": ["completed"]}))
    store.add(Job("gone", "A", "rest", "m", {}, {}, "/in/g.png", webhook={**HOOK, "events": ["completed"]}))
    store.cancel("gone")
    store.claim_next("w", LEASE_S)
    store.set_progress("lost", 5, {"stage": "denoise"}, ran=True)
    store.close()
    store = connect()
    store.recover(max_attempts=1)
    events = []
    while (d := store.claim_delivery(30.0)) is not None:
        events.append((d.request_id, d.job.status, d.job.error_code))
        store.record_delivery(d.event_id, 200, None, None)
    assert events == [("gone", "cancelled", None), ("lost", "failed", "worker_lost")]
    assert store.delete(["gone"]) == 1 and store.webhook_state("gone")["delivered"] == 0
