"""The clean-up sweeper, run by workers when idle, for UI and REST jobs alike, on either storage.

- output files (MP4, thumbnail, sidecar, previews, half-written parts) older than
  Settings.output_ttl_h: in storage (local folders or the bucket), and with a bucket also the local
  output folder (the worker's scratch files and the UI's local copies);
- stored input images older than that, unless their job is still queued or running;
- finished job rows older than Settings.history_ttl_h (their files are gone long before), with
  their webhook events;
- Idempotency-Keys older than 24 h (a retry after that is a new request);
- cached LoRA files (data_dir/loras: downloads and uploads) unused for Settings.output_ttl_h.
"""

from __future__ import annotations

import time
from pathlib import Path

from wan_demo.core.settings import Settings
from wan_demo.jobs.common import ACTIVE, IDEMPOTENCY_S
from wan_demo.jobs.storage.base import Storage, make_storage
from wan_demo.jobs.storage.local import LocalStorage
from wan_demo.jobs.store.base import JobStore
from wan_demo.model.lora_library import LoraLibrary

HOUR_S = 3600.0


def sweep(
    store: JobStore, settings: Settings, now: float | None = None, storage: Storage | None = None
) -> dict:
    """Delete what is past its retention; returns how many outputs, inputs, rows and keys went."""
    now = time.time() if now is None else now
    storage = storage or make_storage(settings)
    removed = {"outputs": 0, "inputs": 0, "rows": 0}
    if settings.output_ttl_h > 0:
        cutoff = now - settings.output_ttl_h * HOUR_S
        places = [storage]
        if storage.remote:  # the local scratch / UI-copy folder as well
            places.append(LocalStorage(Path(settings.output_dir), Path(settings.data_dir) / "inputs"))
        for place in places:
            for location in place.older_than("outputs", cutoff):
                place.delete(location)
                removed["outputs"] += 1
        for location in storage.older_than("inputs", cutoff):
            job = store.get(location.rsplit("/", 1)[-1].split(".")[0])
            if job is None or job.status not in ACTIVE:  # a queued job keeps its input however old
                storage.delete(location)
                removed["inputs"] += 1
    if settings.history_ttl_h > 0:
        rows = store.finished_before(now - settings.history_ttl_h * HOUR_S)
        removed["rows"] = store.delete([job.request_id for job in rows])
    keys = store.forget_keys(now - IDEMPOTENCY_S)
    if keys:
        removed["keys"] = keys
    loras = LoraLibrary(settings).sweep(now)
    if loras:
        removed["loras"] = loras
    return removed
