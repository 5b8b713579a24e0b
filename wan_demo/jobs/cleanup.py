"""The clean-up sweeper, run by the worker when idle, for UI and REST jobs alike.

- output files (MP4, thumbnail, sidecar, half-written parts) older than Settings.output_ttl_h,
  in the output folder and its per-source subfolders (ui/, rest/);
- stored input images older than that, unless their job is still queued or running;
- finished job rows older than Settings.history_ttl_h (their files are gone long before).
"""

from __future__ import annotations

import time
from pathlib import Path

from wan_demo.core.settings import Settings
from wan_demo.jobs.common import ACTIVE
from wan_demo.jobs.store import JobStore

OUTPUT_SUFFIXES = (".mp4", ".jpg", ".json", ".part")
HOUR_S = 3600.0


def old_files(folder: Path, suffixes: tuple[str, ...] | None, cutoff: float) -> list[Path]:
    """Files in `folder` (not below it) last modified before `cutoff` (unix seconds)."""
    if not folder.is_dir():
        return []
    return [
        p
        for p in folder.iterdir()
        if p.is_file() and (suffixes is None or p.suffix in suffixes) and p.stat().st_mtime < cutoff
    ]


def sweep(store: JobStore, settings: Settings, now: float | None = None) -> dict[str, int]:
    """Delete what is past its retention; returns how many outputs, inputs and rows went."""
    now = time.time() if now is None else now
    removed = {"outputs": 0, "inputs": 0, "rows": 0}
    if settings.output_ttl_h > 0:
        cutoff = now - settings.output_ttl_h * HOUR_S
        out = Path(settings.output_dir)
        folders = [out, *(d for d in out.iterdir() if d.is_dir())] if out.is_dir() else []
        for path in (p for folder in folders for p in old_files(folder, OUTPUT_SUFFIXES, cutoff)):
            path.unlink(missing_ok=True)
            removed["outputs"] += 1
        for path in old_files(Path(settings.data_dir) / "inputs", None, cutoff):
            job = store.get(path.name.split(".")[0])
            if job is None or job.status not in ACTIVE:  # a queued job keeps its input however old
                path.unlink(missing_ok=True)
                removed["inputs"] += 1
    if settings.history_ttl_h > 0:
        rows = store.finished_before(now - settings.history_ttl_h * HOUR_S)
        removed["rows"] = store.delete([job.request_id for job in rows])
    return removed
