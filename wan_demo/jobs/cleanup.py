"""The clean-up sweeper: a timer of its own in every process that owns storage (roles all, api and
worker), for UI and REST jobs alike, on either storage; busy or idle makes no difference. Each run
deletes at most SWEEP_BATCH items of each kind, under a database lock (`JobStore.exclusive`), so
with several nodes one sweeps at a time and the others skip that turn:

- output files (MP4, thumbnail, sidecar, previews, half-written parts) older than
  Settings.output_ttl_h: in storage (local folders or the bucket), and with a bucket also the local
  output folder (the worker's scratch files and the UI's local copies);
- stored input images older than that, unless their job is still queued or running;
- finished job rows older than Settings.history_ttl_h (their files are gone long before), with
  their webhook events and the Idempotency-Keys that point at them;
- Idempotency-Keys older than 24 h (a retry after that is a new request);
- cached LoRA files (data_dir/loras: downloads and uploads) unused for Settings.output_ttl_h.

Cadence: every tenth of the shortest retention, at least every SWEEP_MAX_S and at most every
SWEEP_MIN_S, so nothing outlives its retention by more than about 10 %; a run that filled a batch
is followed by the next one after BACKLOG_S (a backlog drains in bounded steps).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from wan_demo.core.settings import Settings
from wan_demo.jobs.common import ACTIVE, IDEMPOTENCY_S, StoreUnavailable
from wan_demo.jobs.storage.base import Storage, make_storage
from wan_demo.jobs.storage.local import LocalStorage
from wan_demo.jobs.store.base import JobStore

log = logging.getLogger(__name__)

HOUR_S = 3600.0
SWEEP_BATCH = 500  # items of each kind (outputs, inputs, rows, keys) deleted per run at most
SWEEP_MAX_S = 600.0  # the longest pause between runs
SWEEP_MIN_S = 1.0  # the shortest (retentions of seconds, in tests)
BACKLOG_S = 1.0  # pause after a run that filled a batch
FIRST_RUN_S = 5.0  # the first run after start (not at once: a starting node has other work)
LOCK = "sweeper"  # JobStore.exclusive name


def sweep(
    store: JobStore, settings: Settings, now: float | None = None, storage: Storage | None = None,
    batch: int = SWEEP_BATCH,
) -> dict:  # fmt: skip
    """Delete what is past its retention, at most `batch` items of each kind; returns how many
    outputs, inputs, rows (and keys, when any) went."""
    now = time.time() if now is None else now
    storage = storage or make_storage(settings)
    removed = {"outputs": 0, "inputs": 0, "rows": 0}
    if settings.output_ttl_h > 0:
        cutoff = now - settings.output_ttl_h * HOUR_S
        places = [storage]
        if storage.remote:  # the local scratch / UI-copy folder as well
            places.append(LocalStorage(Path(settings.output_dir), Path(settings.data_dir) / "inputs"))
        for place in places:
            for location in place.older_than("outputs", cutoff, batch - removed["outputs"]):
                place.delete(location)
                removed["outputs"] += 1
        # a queued job keeps its input however old: look past as many inputs as there are such jobs
        for location in storage.older_than("inputs", cutoff, batch + store.count(ACTIVE)):
            job = store.get(location.rsplit("/", 1)[-1].split(".")[0])
            if (job is None or job.status not in ACTIVE) and removed["inputs"] < batch:
                storage.delete(location)
                removed["inputs"] += 1
    if settings.history_ttl_h > 0:
        rows = store.finished_before(now - settings.history_ttl_h * HOUR_S, batch)
        removed["rows"] = store.delete([job.request_id for job in rows])
    keys = store.forget_keys(now - IDEMPOTENCY_S, batch)
    if keys:
        removed["keys"] = keys
    from wan_demo.model.lora_cache import LoraCache  # file names and times only: no torch (API nodes)

    loras = LoraCache.of(settings).sweep(now)
    if loras:
        removed["loras"] = loras
    return removed


def pause_s(settings: Settings) -> float:
    """Seconds between runs: a tenth of the shortest retention, within SWEEP_MIN_S..SWEEP_MAX_S."""
    hours = [h for h in (settings.output_ttl_h, settings.history_ttl_h) if h > 0]
    return min(SWEEP_MAX_S, max(SWEEP_MIN_S, min(hours, default=24.0) * HOUR_S / 10))


class Sweeper:
    """`sweep` on a timer thread; building starts nothing, `start()` does, `stop()` ends it after
    the running batch."""

    def __init__(self, store: JobStore, storage: Storage, settings: Settings, batch: int = SWEEP_BATCH):
        self.store, self.storage, self.settings, self.batch = store, storage, settings, batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0  # runs that held the lock (tests and logs read it)

    def start(self) -> Sweeper:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="clean-up-sweeper", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> dict | None:
        """One bounded run if this process gets the lock; None when another node is sweeping."""
        with self.store.exclusive(LOCK) as mine:
            if not mine:
                return None
            removed = sweep(self.store, self.settings, storage=self.storage, batch=self.batch)
        self.runs += 1
        if any(removed.values()):
            log.info("clean-up: %s", removed)
        return removed

    def _loop(self) -> None:
        wait = min(FIRST_RUN_S, pause_s(self.settings))
        while not self._stop.wait(wait):
            wait = pause_s(self.settings)
            try:
                removed = self.run_once()
            except StoreUnavailable as e:  # the database restarts: the next turn tries again
                log.warning("clean-up skipped: %s", e)
                continue
            except Exception:  # noqa: BLE001  # a bad file or a bucket hiccup must not end the timer
                log.exception("clean-up run failed; the next turn tries again")
                continue
            if removed is not None and any(n >= self.batch for n in removed.values()):
                wait = BACKLOG_S
