"""Which workers are alive and what they run, read from the job store's `workers` table.

Workers publish their EngineInfo (pixel budget, fast LoRA, cost model, banner) with every
heartbeat. An API node holds no model: it plans submits with what the workers publish. Several
live workers are merged conservatively (the smallest pixel budget, fast mode only if every worker
has the LoRA, the slowest cost model) so any of them can run what was accepted. With no live
worker, the last one seen still describes the model (requests queue until a worker starts).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from wan_demo.core.plan import CostModel, EngineInfo
from wan_demo.jobs.common import StoreUnavailable, WorkerRecord
from wan_demo.jobs.store.base import JobStore

CACHE_S = 2.0  # API nodes re-read the workers table at most this often
NO_WORKER = "No worker is running: requests wait in the queue until one starts."


def info_dict(info: EngineInfo) -> dict[str, Any]:
    return dataclasses.asdict(info)


def info_from(data: dict[str, Any]) -> EngineInfo:
    known = {f.name for f in dataclasses.fields(EngineInfo)}
    values = {k: v for k, v in data.items() if k in known}
    if isinstance(values.get("cost"), dict):
        values["cost"] = CostModel(**values["cost"])
    return EngineInfo(**values)


def merge(infos: list[EngineInfo]) -> EngineInfo:
    """What every one of these workers can run, priced at the slowest."""
    banners = list(dict.fromkeys(i.banner for i in infos))
    return EngineInfo(
        max_area=min(i.max_area for i in infos),
        fast_available=all(i.fast_available for i in infos),
        cost=max((i.cost for i in infos), key=lambda c: c.forward_s),
        is_tiny=any(i.is_tiny for i in infos),
        banner=" / ".join(banners),
    )


class Directory:
    def __init__(self, store: JobStore, lease_s: float):
        self.store, self.lease_s = store, lease_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[WorkerRecord]] = (0.0, [])

    def known(self) -> list[WorkerRecord]:
        """Worker rows, most recent first (cached CACHE_S); the last answer while the store is down."""
        with self._lock:
            at, rows = self._cached
            if time.monotonic() - at >= CACHE_S:
                try:
                    rows = self.store.workers()
                except StoreUnavailable:
                    pass
                self._cached = (time.monotonic(), rows)
            return rows

    def alive(self) -> list[WorkerRecord]:
        """Workers that beat within one lease (they beat every lease_s / 3)."""
        return [w for w in self.known() if w.age_s < self.lease_s]

    def engine_info(self) -> EngineInfo:
        alive, known = self.alive(), self.known()
        if alive:
            info = merge([info_from(w.info) for w in alive])
            count = f"{len(alive)} worker{'s' if len(alive) > 1 else ''}"
            return dataclasses.replace(info, banner=f"{info.banner} | {count}")
        if known:
            info = info_from(known[0].info)
            return dataclasses.replace(info, banner=f"{NO_WORKER} Last seen: {info.banner}")
        return EngineInfo(banner=NO_WORKER)
