"""A video uploaded to /extend. One of our own results, recognised by its bytes, is continued as it
is (its frames are copied unchanged into the joined video); any other MP4 is re-encoded into our
format first (media.clip.import_upload: the model's size for its aspect ratio, 16 fps, with caps)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from PIL import Image

from wan_demo.core.request import InvalidRequest, ParentClip
from wan_demo.core.settings import FPS
from wan_demo.jobs.service import JobService
from wan_demo.jobs.worker import output_dir
from wan_demo.media.clip import check_upload, import_upload, last_frame, parent_from_result, sha256_of
from wan_demo.media.video import read_mp4_metadata

REQUIRED = "is required: upload an MP4, or pass a video returned by /generate or /extend"


def probe_upload(video: str | None) -> None:
    """The validator's check: a video is given and its header is within the caps (nothing decoded)."""
    if not video:
        raise InvalidRequest("video", REQUIRED)
    check_upload(Path(video))


def upload_parent(jobs: JobService, video: str | None, folder: Path) -> tuple[ParentClip, Image.Image]:
    """The clip to continue and its last frame; an upload is re-encoded into `folder`."""
    if not video:
        raise InvalidRequest("video", REQUIRED)
    path = Path(video)  # a file Gradio stored for this upload, never a user-given path
    ours = own_result(path, output_dir(jobs.settings, "ui"))
    if ours is not None:
        return ours, last_frame(Path(ours.path))
    fps = jobs.settings.fps or FPS
    return import_upload(path, folder / "parent.mp4", jobs.engine_info().max_area, fps)


def own_result(path: Path, folder: Path) -> ParentClip | None:
    """Our result in `folder` with exactly these bytes (its embedded metadata names it), else None."""
    try:
        meta = read_mp4_metadata(path)
    except (subprocess.CalledProcessError, KeyError, ValueError, OSError):
        return None
    gen_id = meta.get("id") if isinstance(meta, dict) else None
    if not isinstance(gen_id, str) or not gen_id.isalnum():  # ours are uuid4 hex
        return None
    video, sidecar = folder / f"{gen_id}.mp4", folder / f"{gen_id}.json"
    if not (video.is_file() and sidecar.is_file()) or sha256_of(video) != sha256_of(path):
        return None
    return parent_from_result(video, sidecar)
