"""Queue throughput of the job store backends: python -m bench.queue [--jobs N]

For SQLite (WAL, synchronous=FULL, one file) and PostgreSQL (a throwaway server started here from
the OS package, fsync on), with 1, 4 and 16 workers: N jobs are queued, then the workers drain the
queue with a no-op generation: claim (under a lease) -> "started" progress -> first-step progress
(the attempt) -> finish. That is the store traffic of one real job minus the throttled progress
writes. Each worker is a thread with its own store (own connection), standing in for a worker
process. Printed: wall time, jobs/s, claim latency (median and 95th percentile) and how many jobs
were claimed more than once (must be 0); each configuration runs REPEATS times on a fresh database
and the fastest run is shown (the machine is shared). Measured on CPU, side by side in one run.

Then (bench/queue_wakeups.py) PostgreSQL wake-ups, LISTEN/NOTIFY vs polling: submit-to-claim
latency p50/p95 of the real Worker and idle database transactions per second per process.
`--wakeups-only` runs just that part.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench import queue_wakeups
from bench.services import TempPostgres
from wan_demo.jobs.common import Job, Status, claim_of
from wan_demo.jobs.store.postgres import PostgresJobStore
from wan_demo.jobs.store.sqlite import SqliteJobStore

WORKERS = (1, 4, 16)
LEASE_S = 30.0
REPEATS = 3  # fastest of this many runs per configuration


def drain(make, jobs: int, workers: int) -> dict[str, float]:
    """Queue `jobs`, let `workers` threads drain them; returns the figures."""
    seed = make()
    for i in range(jobs):
        seed.add(
            Job(f"job-{i:05d}", f"key-{i % 3}", "rest", "m", {"prompt": "x"}, {"prompt": "x"}, "/in/x.png")
        )
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(workers + 1)

    def work(name: str) -> None:
        store, mine = make(), []
        start.wait()
        while True:
            t0 = time.perf_counter()
            job = store.claim_next(name, LEASE_S)
            mine.append(time.perf_counter() - t0)
            if job is None:
                break
            claim = claim_of(job)
            store.set_progress(job.request_id, 1, {"stage": "prompt"}, started=True, claim=claim)
            store.set_progress(job.request_id, 3, {"stage": "denoise", "step": 1}, ran=True, claim=claim)
            store.finish(job.request_id, Status.SUCCESS, claim=claim, video_path="/out/x.mp4")
        with lock:
            latencies.extend(mine[:-1])  # the last call found the queue empty
        store.close()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(workers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    done = seed.count((Status.SUCCESS,))
    twice = sum(1 for i in range(jobs) if seed.get(f"job-{i:05d}").claims != 1)
    seed.close()
    assert done == jobs, f"{done} of {jobs} finished"
    ms = sorted(x * 1000 for x in latencies)
    return {
        "wall": wall, "rate": jobs / wall, "p50": statistics.median(ms),
        "p95": ms[int(0.95 * (len(ms) - 1))], "twice": twice,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400, help="jobs per run")
    parser.add_argument("--wakeups-only", action="store_true", help="only LISTEN/NOTIFY vs polling")
    args = parser.parse_args()
    if args.wakeups_only:
        queue_wakeups.main()
        return
    pg = TempPostgres().start()
    rows, runs = [], iter(range(10**6))
    try:
        with tempfile.TemporaryDirectory() as tmp:

            def fresh(backend: str):
                n = next(runs)
                if backend == "SQLite":
                    return _opened(lambda path=Path(tmp) / f"q{n}.sqlite3": SqliteJobStore(path))
                url = pg.create_database(f"bench_{n}")
                return _opened(lambda url=url: PostgresJobStore(url, pool_size=1))

            for backend in ("SQLite", "PostgreSQL"):
                drain(fresh(backend), 20, 2)  # warm-up: files, server caches, imports
            for workers in WORKERS:
                for backend in ("SQLite", "PostgreSQL"):
                    tries = [drain(fresh(backend), args.jobs, workers) for _ in range(REPEATS)]
                    rows.append((backend, workers, min(tries, key=lambda r: r["wall"])))
    finally:
        pg.stop()
    print(f"\n{args.jobs} jobs per run, no-op generation, fastest of {REPEATS}; measured on CPU here\n")
    print("| backend | workers | wall s | jobs/s | claim p50 ms | claim p95 ms | claimed twice |")
    print("|---|---|---|---|---|---|---|")
    for backend, workers, r in sorted(rows, key=lambda x: (x[0] != "SQLite", x[1])):
        print(
            f"| {backend} | {workers} | {r['wall']:.2f} | {r['rate']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} "
            f"| {r['twice']} |"
        )
    queue_wakeups.main()


def _opened(factory):
    def make():
        store = factory()
        store.open()
        return store

    return make


if __name__ == "__main__":
    main()
