"""Videos in: a clip to extend. One of our results is used as it is; an uploaded MP4 is untrusted
and is re-encoded into our format (H.264 yuv420p, the planned size, 16 fps) before anything else
reads it, so the joined video can copy it without re-encoding.

Uploads are bounded before and while decoding: pixels per frame, frame rate, duration, wall time.
Every refusal is an InvalidRequest on the `video` field; a refused import leaves no file behind.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

from wan_demo.core.plan import fit_size
from wan_demo.core.request import InvalidRequest, ParentClip
from wan_demo.core.settings import FPS
from wan_demo.core.validate import MAX_PARENT_S, MAX_VIDEO_FPS, MAX_VIDEO_PIXELS
from wan_demo.media.image import resize_for_model
from wan_demo.media.video import open_writer, read_sidecar

FIELD = "video"
IMPORT_TIMEOUT_S = 120.0  # decode + resize + encode of an upload, wall time
NOT_A_VIDEO = "is not a readable video (send an MP4, MOV or WebM file)"
# Container by its first bytes -> the one ffmpeg demuxer allowed to read it (no other is exposed)
MAGIC = ((4, b"ftyp", "mov"), (0, b"\x1a\x45\xdf\xa3", "matroska"))  # MP4/MOV; WebM/Matroska


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration_s: float | None  # None when the container does not say


def demuxer(path: Path, field: str = FIELD) -> list[str]:
    """ffmpeg input options forcing the demuxer of the file's container (MP4/MOV or WebM/Matroska)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        raise InvalidRequest(field, NOT_A_VIDEO) from None
    for offset, magic, name in MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return ["-f", name]
    raise InvalidRequest(field, NOT_A_VIDEO)


def probe(path: Path, field: str = FIELD) -> VideoInfo:
    """Size, frame rate and duration from the container's header (no frame is decoded)."""
    container = demuxer(path, field)
    try:
        reader = imageio_ffmpeg.read_frames(str(path), input_params=container)
        meta = next(reader)
        reader.close()
    except Exception:  # noqa: BLE001  # ffmpeg's many ways of saying "not a video"
        raise InvalidRequest(field, NOT_A_VIDEO) from None
    width, height = meta.get("size") or (0, 0)
    fps, duration = float(meta.get("fps") or 0.0), meta.get("duration")
    if width <= 0 or height <= 0 or fps <= 0:
        raise InvalidRequest(field, NOT_A_VIDEO)
    return VideoInfo(int(width), int(height), fps, float(duration) if duration else None)


def frames_of(path: Path, fps: float | None = None, field: str = FIELD):
    """Decoded uint8 (H, W, 3) frames, one at a time (resampled to `fps` by ffmpeg when given)."""
    params, container = (["-vf", f"fps={fps:g}"] if fps else None), demuxer(path, field)
    try:
        reader = imageio_ffmpeg.read_frames(str(path), input_params=container, output_params=params)
        width, height = next(reader)["size"]
    except Exception:  # noqa: BLE001
        raise InvalidRequest(field, NOT_A_VIDEO) from None
    try:
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


def read_tail(path: Path, count: int) -> tuple[list[np.ndarray], int]:
    """The last `count` frames and the number of frames (decodes the clip once, keeps only the tail)."""
    tail: deque[np.ndarray] = deque(maxlen=count)
    total = 0
    for frame in frames_of(path):
        tail.append(frame)
        total += 1
    if not total:
        raise InvalidRequest(FIELD, "has no frames")
    return list(tail), total


def last_frame(path: Path) -> Image.Image:
    return Image.fromarray(read_tail(path, 1)[0][-1])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parent_from_result(video: Path, meta: dict | Path, request_id: str | None = None) -> ParentClip:
    """One of our results as a clip to continue; its sidecar JSON (the dict, or its file) gives the
    sizes and its lineage."""
    meta = meta if isinstance(meta, dict) else read_sidecar(meta)
    return ParentClip(
        path=str(video), num_frames=int(meta["num_frames"]), width=int(meta["width"]),
        height=int(meta["height"]), fps=int(meta["fps"]), source="result", request_id=request_id,
        sha256=sha256_of(video), lineage={"id": meta.get("id"), **(meta.get("lineage") or {})},
    )  # fmt: skip


def check_upload(path: Path) -> VideoInfo:
    """The header of an uploaded video, within the caps (frame size, frame rate, duration)."""
    info = probe(path)
    if info.width * info.height > MAX_VIDEO_PIXELS:
        raise InvalidRequest(
            FIELD, f"{info.width}x{info.height} has too many pixels; the limit is {MAX_VIDEO_PIXELS}"
        )
    if info.fps > MAX_VIDEO_FPS:
        raise InvalidRequest(FIELD, f"{info.fps:g} fps is too high; the limit is {MAX_VIDEO_FPS:g}")
    if info.duration_s is not None and info.duration_s > MAX_PARENT_S:
        raise InvalidRequest(FIELD, _too_long(info.duration_s))
    return info


def import_upload(src: Path, dst: Path, max_area: int, fps: int = FPS) -> tuple[ParentClip, Image.Image]:
    """Re-encode an uploaded video into our format at `dst`: the model's size for its aspect ratio,
    `fps` frames per second. Returns the clip and its last frame (the next segment's start)."""
    info = check_upload(src)
    width, height = fit_size(info.width, info.height, max_area)
    tmp = dst.with_name(dst.name + ".part")
    try:
        count, last = _reencode(src, tmp, (width, height), fps)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    clip = ParentClip(str(dst), count, width, height, fps, "upload", sha256=sha256_of(src))
    return clip, last


def _reencode(src: Path, tmp: Path, size: tuple[int, int], fps: int) -> tuple[int, Image.Image]:
    deadline, limit = time.monotonic() + IMPORT_TIMEOUT_S, int(MAX_PARENT_S * fps)
    writer, count, last = open_writer(tmp, *size, fps, {}), 0, None
    try:
        for frame in frames_of(src, fps):
            if count >= limit:
                raise InvalidRequest(FIELD, _too_long(count / fps))
            if time.monotonic() > deadline:
                raise InvalidRequest(FIELD, f"took longer than {IMPORT_TIMEOUT_S:g} s to decode")
            last = resize_for_model(Image.fromarray(frame), size)
            writer.send(np.asarray(last))
            count += 1
    finally:
        writer.close()
    if last is None:
        raise InvalidRequest(FIELD, "has no frames")
    return count, last


def _too_long(seconds: float) -> str:
    return f"is longer than {MAX_PARENT_S:g} s ({seconds:.1f} s or more); shorter videos can be extended"
