"""Where job files live: input images and outputs (MP4, thumbnail, sidecar; a live preview too).

Two backends behind one small interface, chosen by `Settings.storage_url`:
- "" (default): local folders. Keys `outputs/<rest>` map to `output_dir/<rest>` and `inputs/<rest>`
  to `data_dir/inputs/<rest>`; a location is the file's path.
- `s3://bucket/prefix`: any S3-compatible bucket through boto3 (jobs/storage_s3.py); a location is
  `s3://bucket/prefix/<key>`. The worker still writes its outputs to `output_dir` first (ffmpeg needs
  a file), then `put_file` uploads them and deletes the local copy.

Keys name what a file is: `inputs/<request_id>.<ext>`, `outputs/ui/<id>.mp4`, `outputs/rest/<id>.jpg`,
and for a live preview `outputs/<source>/<request_id>.preview.<n>.webp`. REST outputs live under
`outputs/rest/` and UI outputs under `outputs/ui/`; only the local `output_dir/ui` folder is ever
served by Gradio. The job store records locations (what `put_*` return); callers pass a location
back to `read_bytes`, `reader`, `url`, `delete`. Constructing a storage opens nothing; `open()` does.

    location = storage.put_bytes("outputs/rest/<request_id>.preview.jpg", jpeg_bytes)
    link = storage.url(location, expires_s=600)  # a presigned link (S3) or None (serve through the API)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Protocol

from wan_demo.core.settings import Settings
from wan_demo.jobs.storage_common import check_key, write_durably

OUTPUT_SUFFIXES = (".mp4", ".jpg", ".json", ".webp", ".part")  # the local clean-up leaves others alone


class Storage(Protocol):
    remote: bool  # False: every location is a local path (Gradio and FileResponse read it directly)

    def open(self) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> str:
        """Store `data` durably under `key`; returns the location to record."""
        ...

    def put_file(self, key: str, path: Path) -> str:
        """Move a finished local file to `key` (local: rename; S3: upload, then delete the file)."""
        ...

    def read_bytes(self, location: str) -> bytes: ...
    def reader(self, location: str) -> tuple[BinaryIO, int]:
        """(stream, size in bytes); FileNotFoundError once the file is gone (expired)."""
        ...

    def url(self, location: str, expires_s: int) -> str | None:
        """A link valid `expires_s` seconds without our API in between (S3), or None (local)."""
        ...

    def delete(self, location: str) -> None: ...
    def older_than(self, area: str, cutoff: float) -> list[str]:
        """Locations in `area` ("inputs" | "outputs") last written before `cutoff` (unix seconds)."""
        ...

    def local_path(self, location: str) -> Path | None:
        """The local file behind a location, or None for a remote one."""
        ...


class LocalStorage:
    remote = False

    def __init__(self, output_dir: Path, inputs_dir: Path):
        self.output_dir, self.inputs_dir = Path(output_dir), Path(inputs_dir)

    def open(self) -> None:
        self.inputs_dir.mkdir(parents=True, exist_ok=True)

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

    def older_than(self, area: str, cutoff: float) -> list[str]:
        if area == "inputs":
            return [str(p) for p in old_files(self.inputs_dir, None, cutoff)]
        out = self.output_dir
        folders = [out, *(d for d in out.iterdir() if d.is_dir())] if out.is_dir() else []
        return [str(p) for folder in folders for p in old_files(folder, OUTPUT_SUFFIXES, cutoff)]

    def local_path(self, location: str) -> Path | None:
        return Path(location)


def old_files(folder: Path, suffixes: tuple[str, ...] | None, cutoff: float) -> list[Path]:
    """Files in `folder` (not below it) last modified before `cutoff` (unix seconds)."""
    if not folder.is_dir():
        return []
    return [
        p
        for p in folder.iterdir()
        if p.is_file() and (suffixes is None or p.suffix in suffixes) and p.stat().st_mtime < cutoff
    ]


def make_storage(settings: Settings) -> Storage:
    """The backend `Settings.storage_url` names: "" = local folders, s3://bucket/prefix = S3."""
    local = LocalStorage(Path(settings.output_dir), Path(settings.data_dir) / "inputs")
    url = settings.storage_url
    if not url:
        return local
    if url.startswith("s3://"):
        from wan_demo.jobs.storage_s3 import S3Storage

        return S3Storage(url)
    raise ValueError(f"storage_url must be empty (local folders) or s3://bucket/prefix; got {url[:40]!r}")
