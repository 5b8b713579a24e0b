"""A job's inputs in storage: the picture as sent (or a PNG of it), the parent clip of an extension,
the end frame; and a finished job read back as a clip to extend."""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from wan_demo.core.request import ParentClip, ValidRequest
from wan_demo.core.settings import API_MODEL_ID
from wan_demo.jobs.common import Job, ParentUnavailable, Status
from wan_demo.jobs.storage.base import Storage
from wan_demo.jobs.storage.common import write_durably
from wan_demo.media.clip import parent_from_result

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


@dataclass(frozen=True)
class SourceImage:
    """The input as the client sent it (kept instead of re-encoding the decoded picture)."""

    data: bytes
    format: str  # "JPEG" | "PNG" | "WEBP"


def store_inputs(
    storage: Storage, request: ValidRequest, owner: str, source: str, payload: dict[str, Any] | None,
    image: SourceImage | None, last_image: SourceImage | None, est_seconds: float,
) -> Job:  # fmt: skip
    """A job for `request` whose inputs (picture or parent clip, end frame) are in storage."""
    request_id = str(uuid.uuid4())
    if request.parent is not None:
        try:
            data = Path(request.parent.path).read_bytes()
        except FileNotFoundError:
            raise ParentUnavailable("expired", "the video to extend was deleted (outputs expire)") from None
        location = storage.put_bytes(f"inputs/{request_id}.mp4", data)
    else:
        image = image or SourceImage(_png(request.image), "PNG")
        location = storage.put_bytes(f"inputs/{request_id}.{EXTENSIONS[image.format]}", image.data)
    params = request.params()
    job = Job(request_id, owner, source, API_MODEL_ID, params, payload or params, location,
              est_seconds=est_seconds)  # fmt: skip
    if request.last_image is not None:
        end = last_image or SourceImage(_png(request.last_image), "PNG")
        name = f"inputs/{request_id}.last.{EXTENSIONS[end.format]}"  # the sweeper reads the id before "."
        try:
            job.last_image_path = storage.put_bytes(name, end.data)
        except BaseException:
            storage.delete(location)
            raise
    return job


def parent_clip(storage: Storage, job: Job | None, request_id: str, folder: Path) -> ParentClip:
    """A finished job of `owner` as a clip to extend; ParentUnavailable says why it cannot be.
    Its MP4 is read where it is (local storage) or copied into `folder` (a bucket)."""
    if job is None:
        raise ParentUnavailable("not_found", f"no request {request_id[:64]!r} to extend for this caller")
    if job.status != Status.SUCCESS:
        raise ParentUnavailable("not_success", f"the request to extend is {job.status}; only a success can")
    try:
        meta = json.loads(storage.read_bytes(job.metadata_path or ""))
        video = storage.local_path(job.video_path or "")
        if video is None:
            video = folder / f"{job.request_id}.mp4"
            write_durably(video, storage.read_bytes(job.video_path or ""))
        return parent_from_result(video, meta, job.request_id)
    except FileNotFoundError:
        raise ParentUnavailable("expired", "the video to extend was deleted (outputs expire)") from None
    except (OSError, ValueError, KeyError, TypeError):  # a sidecar cut short by the sweeper or a crash
        raise ParentUnavailable("expired", "the video to extend can no longer be read") from None


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast; the file is temporary
    return buffer.getvalue()
