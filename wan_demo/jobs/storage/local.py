"""Job files in local folders: `outputs/<rest>` under output_dir, `inputs/<rest>` under data_dir/inputs;
a location is the file's path (see jobs/storage/base.py for the interface)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from wan_demo.jobs.storage.common import check_key, write_durably

OUTPUT_SUFFIXES = (".mp4", ".jpg", ".json", ".webp", ".part")  # the local clean-up leaves others alone


class LocalStorage:
    remote = False

    def __init__(self, output_dir: Path, inputs_dir: Path):
        self.output_dir, self.inputs_dir = Path(output_dir), Path(inputs_dir)

    def open(self) -> None:
        self.inputs_dir.mkdir(parents=True, exist_ok=True)

    def ping(self) -> None:
        for folder in (self.output_dir, self.inputs_dir):
            if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
                raise OSError(f"{folder} is not writable")
        if not self.inputs_dir.is_dir():
            raise OSError(f"{self.inputs_dir} is missing")

    def path_of(self, key: str) -> Path:
        area, _, rest = check_key(key).partition("/")
        return (self.inputs_dir if area == "inputs" else self.output_dir) / rest

    def put_bytes(self, key: str, data: bytes) -> str:
        path = self.path_of(key)
        write_durably(path, data)
        return str(path)

    def put_file(self, key: str, path: Path) -> str:
        target = self.path_of(key)
        if Path(path).resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        return str(target)

    def read_bytes(self, location: str) -> bytes:
        return Path(location).read_bytes()

    def reader(self, location: str) -> tuple[BinaryIO, int]:
        path = Path(location)
        return open(path, "rb"), path.stat().st_size  # noqa: SIM115  # the caller streams and closes it

    def url(self, location: str, expires_s: int) -> str | None:
        return None

    def delete(self, location: str) -> None:
        Path(location).unlink(missing_ok=True)

    def older_than(self, area: str, cutoff: float, limit: int | None = None) -> list[str]:
        if area == "inputs":
            found = old_files(self.inputs_dir, None, cutoff)
        else:
            out = self.output_dir
            folders = [out, *(d for d in out.iterdir() if d.is_dir())] if out.is_dir() else []
            found = (p for folder in folders for p in old_files(folder, OUTPUT_SUFFIXES, cutoff))
        return [str(p) for p in itertools.islice(found, limit)]

    def local_path(self, location: str) -> Path | None:
        return Path(location)


def old_files(folder: Path, suffixes: tuple[str, ...] | None, cutoff: float) -> Iterator[Path]:
    """Files in `folder` (not below it) last modified before `cutoff` (unix seconds), lazily."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        try:
            if p.is_file() and (suffixes is None or p.suffix in suffixes) and p.stat().st_mtime < cutoff:
                yield p
        except FileNotFoundError:  # deleted meanwhile (a job's own clean-up, another sweeper)
            continue
