"""Queue overhead per job at 1, 100 and 1,000 queued jobs: python -m bench.queue_overhead [--cycles N]

For each store backend (SQLite file; PostgreSQL, a throwaway server started here, fsync on) the
queue is filled with N jobs spread over 11 owners (10 API keys, one holding half the jobs, and the
UI), then held at that depth for `cycles` steady-state cycles of one job's store traffic with a
no-op generator: submit (add, with the admission checks) -> pick (claim_next: the round-robin rule)
-> started / first-step progress -> finish. Each cycle's submit comes from a rotating owner so the
round-robin turns. Printed per depth: median milliseconds of the pick, the submit, the reported
queue position of the newest job (queue_ahead), the whole per-job overhead (submit -> start ->
finish, no generation), and the pick query alone (the round-robin SELECT, timed QUERY_RUNS times
at that depth) relative to depth 1: the scheduler's own cost, apart from the commit's fsync.
Measured on CPU, side by side in one run; absolute figures vary with the (shared) machine, the
ratios are the point.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.services import TempPostgres
from wan_demo.jobs.common import Job, Status, claim_of
from wan_demo.jobs.store import postgres as store_postgres
from wan_demo.jobs.store import sqlite as store_sqlite
from wan_demo.jobs.store.postgres import PostgresJobStore
from wan_demo.jobs.store.sqlite import SqliteJobStore

DEPTHS = (1, 100, 1000)
LEASE_S = 30.0
WARMUP = 5  # cycles not counted (caches, plans)
QUERY_RUNS = 200  # the pick query alone is timed this many times per depth (its median is printed)
# The pick rule's SELECT as each backend runs it inside claim_next, without the row locks (a read).
PICK_QUERY = {
    "SQLite": store_sqlite.PICK_NEXT,
    "PostgreSQL": store_postgres.PICK_NEXT.replace(" FOR UPDATE SKIP LOCKED", ""),
}
OWNERS = [f"key-{i}" for i in range(10)] + ["ui"]


def owner_of(i: int) -> str:
    """Half of the jobs belong to one busy key, the rest rotate over the others and the UI."""
    return OWNERS[0] if i % 2 == 0 else OWNERS[1 + (i // 2) % (len(OWNERS) - 1)]


def job(i: int, owner: str) -> Job:
    return Job(
        f"job-{i:06d}", owner, "rest", "m", {"prompt": "x"}, {"prompt": "x"}, "/in/x.png", est_seconds=5.0
    )


def ms(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def measure(store, backend: str, depth: int, cycles: int) -> dict[str, float]:
    """Fill to `depth`, then `cycles` steady cycles; returns median ms per stage."""
    for i in range(depth):
        store.add(job(i, owner_of(i)), queue_max=depth + 10)
    figures: dict[str, list[float]] = {"submit": [], "pick": [], "position": [], "job": []}
    for c in range(WARMUP + cycles):
        new = job(depth + c, owner_of(depth + c))
        t_submit, _ = ms(lambda new=new: store.add(new, queue_max=depth + 10))
        t_position, _ = ms(lambda new=new: store.queue_ahead(store.get(new.request_id)))
        t_pick, picked = ms(lambda: store.claim_next("bench", LEASE_S))
        claim = claim_of(picked)
        t_rest, _ = ms(
            lambda picked=picked, claim=claim: (
                store.set_progress(picked.request_id, 1, {"stage": "prompt"}, started=True, claim=claim),
                store.set_progress(picked.request_id, 3, {"stage": "denoise"}, ran=True, claim=claim),
                store.finish(picked.request_id, Status.SUCCESS, claim=claim, video_path="/out/x.mp4"),
            )
        )
        assert store.count((Status.QUEUED,)) == depth  # the depth held steady
        if c >= WARMUP:
            for name, value in (("submit", t_submit), ("pick", t_pick), ("position", t_position)):
                figures[name].append(value)
            figures["job"].append(t_submit + t_pick + t_rest)
    figures["query"] = [ms(lambda: store._rows(PICK_QUERY[backend]))[0] for _ in range(QUERY_RUNS)]
    return {name: statistics.median(values) for name, values in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=40, help="steady-state cycles per depth")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args()
    pg = None if args.sqlite_only else TempPostgres().start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n, depth in enumerate(DEPTHS):
                stores = {"SQLite": SqliteJobStore(Path(tmp) / f"q{n}.sqlite3")}
                if pg is not None:
                    stores["PostgreSQL"] = PostgresJobStore(pg.create_database(f"overhead_{n}"), pool_size=1)
                for backend, store in stores.items():
                    store.open()
                    rows.append((backend, depth, measure(store, backend, depth, args.cycles)))
                    store.close()
    finally:
        if pg is not None:
            pg.stop()
    print(f"\nmedian of {args.cycles} steady cycles per depth, no-op generator; measured on CPU here\n")
    print(
        "| backend | queued jobs | pick query ms | x depth 1 | claim (pick + commit) ms | submit ms "
        "| position ms | per-job overhead ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = {b: r["query"] for b, d, r in rows if d == DEPTHS[0]}
    for backend, depth, r in sorted(rows, key=lambda x: (x[0] != "SQLite", x[1])):
        print(
            f"| {backend} | {depth} | {r['query']:.3f} | {r['query'] / base[backend]:.2f} | {r['pick']:.2f} "
            f"| {r['submit']:.2f} | {r['position']:.2f} | {r['job']:.2f} |"
        )


if __name__ == "__main__":
    main()
