"""Wake-ups on PostgreSQL, LISTEN/NOTIFY vs polling, side by side: part of `python -m bench.queue`
(alone: python -m bench.queue_wakeups).

Two configurations of the real parts on one throwaway PostgreSQL server (fsync on):
- "polling only": each process polls (the worker looks every 0.25 s, each of the 4 webhook
  deliverer threads every 0.5 s; the pace while the LISTEN connection is down): the same code
  with a store whose notifications are switched off;
- "NOTIFY": a submit / a new outbox row wakes them at once; polling only as a safety net (5 s for
  the worker, 20 s per deliverer thread).

Printed per configuration: submit-to-claim latency (p50 / p95 over SUBMITS submits from another
connection at random moments; a claim is when the real Worker hands the job to its run function),
and idle database transactions per second per process, counted by the store (its `transactions`)
and by PostgreSQL (pg_stat_database.xact_commit of the database, all connections) over IDLE_S
seconds with nothing to do: the worker process (Worker + heartbeat + lease reclaim) and the
REST-serving process (4 webhook deliverers). Measured on CPU, in one run.
"""

from __future__ import annotations

import io
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from bench.services import TempPostgres
from wan_demo.core.plan import EngineInfo
from wan_demo.core.request import GenerationRequest, InvalidRequest
from wan_demo.core.settings import Settings
from wan_demo.core.validate import validate
from wan_demo.jobs.common import Job
from wan_demo.jobs.store.postgres import PostgresJobStore
from wan_demo.jobs.worker import Worker
from wan_demo.rest.webhooks import Deliverer

SUBMITS = 30
IDLE_S = 30.0  # > the heartbeat (lease_s / 3 = 10 s) and the reclaim cadence (5 s), several times


class PollingStore(PostgresJobStore):
    """The store as it was before LISTEN/NOTIFY: nobody hears anything, everyone polls."""

    def subscribe(self, subscriber) -> None:
        pass


class NoModel:
    """The engine a Worker asks about between jobs (no pipeline is ever run here)."""

    fast_available = False

    def plan_info(self) -> EngineInfo:
        return EngineInfo(banner="bench: no model")


def input_image(folder: Path) -> tuple[str, dict]:
    path = folder / "in.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 200)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return str(path), validate(GenerationRequest(Image.open(path), "bench")).params()


def xact_commits(store: PostgresJobStore) -> int:
    rows = store._rows("SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()")
    return int(rows[0]["n"])


def measure(kind: type[PostgresJobStore], url: str, folder: Path) -> dict[str, float]:
    settings = Settings(data_dir=folder / "data", output_dir=folder / "out", webhook_secret="x" * 32)
    location, params = input_image(folder)
    claimed: dict[str, float] = {}

    def run(request, *_args, **_kw):  # the claim moment; then a quick failure (no model)
        claimed[current[0]] = time.perf_counter()
        raise InvalidRequest("bench", "no model in this benchmark")

    current = [""]
    worker_store, api_store, submitter = kind(url, 2), kind(url, 2), PostgresJobStore(url, 1)
    for s in (worker_store, api_store, submitter):
        s.open()
    worker = Worker(worker_store, NoModel(), settings, run=run, worker_id="bench")
    deliverer = Deliverer(api_store, settings, render=lambda job: b"{}")
    worker.start()
    deliverer.start()
    time.sleep(3.0)  # listeners connected, first heartbeat and reclaim done
    figures = idle(worker_store, api_store, submitter)
    latencies = []
    for i in range(SUBMITS):
        time.sleep(random.uniform(0.2, 0.8))  # a random moment relative to any poll
        rid = current[0] = f"{kind.__name__}-{i}"
        submitter.add(Job(rid, "key_bench", "rest", "m", params, params, location))
        submitted = time.perf_counter()
        while rid not in claimed:
            time.sleep(0.001)
        latencies.append((claimed[rid] - submitted) * 1000)
    deliverer.stop()
    worker.stop()
    for s in (worker_store, api_store, submitter):
        s.close()
    ms = sorted(latencies)
    return {**figures, "p50": statistics.median(ms), "p95": ms[int(0.95 * (len(ms) - 1))]}


def idle(worker_store, api_store, submitter) -> dict[str, float]:
    counts = (worker_store.transactions, api_store.transactions, xact_commits(submitter))
    time.sleep(IDLE_S)
    return {
        "worker_tps": (worker_store.transactions - counts[0]) / IDLE_S,
        "api_tps": (api_store.transactions - counts[1]) / IDLE_S,
        "db_tps": (xact_commits(submitter) - counts[2] - 1) / IDLE_S,  # minus this reading's own
    }


def main() -> list[str]:
    pg = TempPostgres().start()
    rows = []
    try:
        for n, (name, kind) in enumerate((("polling only", PollingStore), ("NOTIFY", PostgresJobStore))):
            with tempfile.TemporaryDirectory() as tmp:
                rows.append((name, measure(kind, pg.create_database(f"wake_{n}"), Path(tmp))))
                threading.Event().wait(0.5)
    finally:
        pg.stop()
    lines = [
        f"\nwake-ups on PostgreSQL: {SUBMITS} submits at random moments, {IDLE_S:g} s idle;"
        " measured on CPU\n",
        "| mode | submit->claim p50 ms | p95 ms | idle tx/s worker process | idle tx/s REST process "
        "| idle commits/s whole database |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['p50']:.1f} | {r['p95']:.1f} | {r['worker_tps']:.2f} | {r['api_tps']:.2f} "
            f"| {r['db_tps']:.2f} |"
        )
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
