"""Where job files live: input images and outputs (MP4, thumbnail, sidecar; a live preview too).

Two backends behind one small interface, chosen by `Settings.storage_url`:
- "" (default): local folders. Keys `outputs/<rest>` map to `output_dir/<rest>` and `inputs/<rest>`
  to `data_dir/inputs/<rest>`; a location is the file's path.
- `s3://bucket/prefix`: any S3-compatible bucket through boto3 (jobs/storage/s3.py); a location is
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

from pathlib import Path
from typing import BinaryIO, Protocol

from wan_demo.core.settings import Settings


class Storage(Protocol):
    remote: bool  # False: every location is a local path (Gradio and FileResponse read it directly)

    def open(self) -> None: ...
    def ping(self) -> None:
        """Raise OSError when the storage cannot be used right now (for /readyz)."""
        ...

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
    def older_than(self, area: str, cutoff: float, limit: int | None = None) -> list[str]:
        """Locations in `area` ("inputs" | "outputs") last written before `cutoff` (unix seconds);
        at most `limit` of them (the listing stops there: the sweeper's bounded batch)."""
        ...

    def local_path(self, location: str) -> Path | None:
        """The local file behind a location, or None for a remote one."""
        ...


def make_storage(settings: Settings) -> Storage:
    """The backend `Settings.storage_url` names: "" = local folders, s3://bucket/prefix = S3."""
    url = settings.storage_url
    if not url:
        from wan_demo.jobs.storage.local import LocalStorage

        return LocalStorage(Path(settings.output_dir), Path(settings.data_dir) / "inputs")
    if url.startswith("s3://"):
        from wan_demo.jobs.storage.s3 import S3Storage

        return S3Storage(url)
    raise ValueError(f"storage_url must be empty (local folders) or s3://bucket/prefix; got {url[:40]!r}")
