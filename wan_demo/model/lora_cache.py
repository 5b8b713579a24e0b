"""The cache of LoRA files this server fetched or was given: data_dir/loras/<sha256>.safetensors.

Files from the hub, from an https URL (fetched by the REST layer) and uploads are kept by content and
reused: a source seen before is not fetched again (`index.json` maps sources and names to digests).
Bounded by Settings.lora_cache_gb, least recently used first (a file's mtime is its last use); files
unused for Settings.output_ttl_h are swept like outputs. A file enters only after its check passed
(model/lora_library.py): a refused file is never kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from pathlib import Path

from wan_demo.core.settings import Settings

SUFFIX = ".safetensors"
INDEX = "index.json"  # {"names": {sha: name}, "sources": {source: sha}}
PART_MAX_AGE_S = 3600.0  # an interrupted download's part file is removed after this long
GB = 1e9


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LoraCache:
    def __init__(self, folder: Path, max_gb: float, ttl_h: float):
        self.folder, self.max_gb, self.ttl_h = Path(folder), max_gb, ttl_h
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: Settings) -> LoraCache:
        """The cache Settings name: data_dir/loras, lora_cache_gb, kept as long as outputs."""
        return cls(Path(settings.data_dir) / "loras", settings.lora_cache_gb, settings.output_ttl_h)

    def path(self, sha: str) -> Path:
        return self.folder / f"{sha}{SUFFIX}"

    def part(self) -> Path:
        """A fresh file name for a download or upload in progress (same disk: kept by a rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / f".part-{uuid.uuid4().hex}"

    def keep(self, part: Path, sha: str, name: str, source: str = "") -> Path:
        """Move a checked part file in under its digest and record its name (and source)."""
        path = self.path(sha)
        os.replace(part, path)
        with self._lock:
            index = self._index()
            index["names"].setdefault(sha, name)
            if source:
                index["sources"][source] = sha
            self._write(index)
        self._evict(keep=path)
        return path

    def by_source(self, source: str) -> Path | None:
        sha = self._index()["sources"].get(source)
        return self.path(sha) if sha and self.path(sha).is_file() else None

    def name(self, sha: str, default: str = "") -> str:
        return self._index()["names"].get(sha, default or f"{sha[:12]}{SUFFIX}")

    def touch(self, path: Path) -> None:
        """Mark a cached file used now (its mtime orders the LRU)."""
        if path.parent == self.folder:
            os.utime(path)

    def listing(self) -> list[tuple[str, str]]:
        """(sha256, name) of every cached file, most recently used first."""
        files = sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
        names = self._index()["names"]
        return [(p.stem, names.get(p.stem, p.name)) for p in files]

    def sweep(self, now: float | None = None) -> int:
        """Remove files unused for ttl_h (0 = keep) and stale part files; returns the count."""
        now = time.time() if now is None else now
        removed = 0
        for path in self.folder.glob("*") if self.folder.is_dir() else []:
            age = now - path.stat().st_mtime
            unused = path.suffix == SUFFIX and self.ttl_h > 0 and age > self.ttl_h * 3600
            if unused or (path.name.startswith(".part-") and age > PART_MAX_AGE_S):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _evict(self, keep: Path) -> None:
        """Least recently used files first until the cache fits max_gb."""
        files = sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if total <= self.max_gb * GB:
                break
            if path != keep:
                total -= path.stat().st_size
                path.unlink(missing_ok=True)

    def _index(self) -> dict:
        try:
            index = json.loads((self.folder / INDEX).read_text())
        except (OSError, ValueError):
            index = {}
        return {"names": dict(index.get("names", {})), "sources": dict(index.get("sources", {}))}

    def _write(self, index: dict) -> None:
        tmp = self.folder / f".{INDEX}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(index, ensure_ascii=False))
        os.replace(tmp, self.folder / INDEX)  # atomic: a reader sees the old or the new index
