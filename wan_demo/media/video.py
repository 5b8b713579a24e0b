"""Frames -> browser-playable H.264 MP4 with the generation settings inside, a JPEG thumbnail and a
JSON sidecar. Files appear atomically (written to a temp name, then renamed)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
from PIL import Image

from wan_demo.core.request import GenerationResult

METADATA_KEY = "comment"  # MP4 udta tag that ffmpeg writes and reads back
THUMBNAIL_QUALITY = 90  # JPEG quality, 0-100
VIDEO_QUALITY = 5  # imageio-ffmpeg VBR scale 0-10, as diffusers' export_to_video


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1] -> uint8, rounded (not truncated). Call per frame: whole-clip
    temporaries (81x480x832x3 float32 = 390 MB each) cost more than the arithmetic."""
    if frame.dtype == np.uint8:
        return frame
    scaled = frame * 255.0
    scaled += 0.5
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return scaled.astype(np.uint8)


def write_mp4(frames: Sequence[np.ndarray], path: Path, fps: int, metadata: dict[str, Any]) -> Path:
    """Encode frames (H, W, 3), float in [0, 1] or uint8, as H.264 yuv420p with `metadata` as JSON.

    Frames are converted one at a time while streaming to ffmpeg (no whole-clip copy)."""
    if not len(frames) or frames[0].ndim != 3 or frames[0].shape[-1] != 3:
        raise ValueError(f"expected a sequence of (H, W, 3) frames, got {len(frames)} of {_shape(frames)}")
    height, width = frames[0].shape[:2]
    tmp = path.with_name(path.name + ".part")
    writer = imageio_ffmpeg.write_frames(
        str(tmp),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",  # the only pixel format every browser plays
        quality=VIDEO_QUALITY,
        macro_block_size=16,
        output_params=[
            "-f", "mp4",
            "-movflags", "+faststart",  # index first: playback starts before the download ends
            "-metadata", f"{METADATA_KEY}={json.dumps(metadata, ensure_ascii=False)}",
        ],
    )  # fmt: skip
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(to_uint8(frame)))
    writer.close()
    os.replace(tmp, path)
    return path


def _shape(frames: Sequence[np.ndarray]) -> str:
    return str(getattr(frames[0], "shape", "?")) if len(frames) else "nothing"


def read_mp4_metadata(path: Path) -> dict[str, Any]:
    """The JSON stored by write_mp4, read back with the bundled ffmpeg."""
    out = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for line in _unescape_ffmetadata(out):
        key, _, value = line.partition("=")
        if key == METADATA_KEY:
            return json.loads(value)
    raise KeyError(f"no {METADATA_KEY!r} metadata in {path}")


def _unescape_ffmetadata(text: str) -> list[str]:
    """ffmetadata escapes '=', ';', '#', '\\' and newlines with a backslash."""
    lines, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "\n":
            lines.append("".join(current))
            current = []
        else:
            current.append(ch)
    lines.append("".join(current))
    return lines


def write_thumbnail(frame: np.ndarray, path: Path) -> Path:
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(frame).save(tmp, format="JPEG", quality=THUMBNAIL_QUALITY)
    os.replace(tmp, path)
    return path


def write_sidecar(metadata: dict[str, Any], path: Path) -> Path:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(metadata, indent=2, ensure_ascii=False))
    os.replace(tmp, path)
    return path


def count_frames(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) of an MP4, by decoding it (test and bench helper)."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return sum(1 for _ in reader), *meta["size"]


def metadata_of(result: GenerationResult) -> dict[str, Any]:
    """JSON-safe description of a result, stored in the MP4 and the sidecar."""
    return {
        "id": result.id,
        "prompt": result.settings.get("prompt"),
        "final_prompt": result.final_prompt,
        "prompt_info": result.prompt_info,
        "seed": result.seed_used,
        "model": result.model,
        "is_tiny_model": result.is_tiny_model,
        "width": result.width,
        "height": result.height,
        "num_frames": result.num_frames,
        "fps": result.fps,
        "duration_s": result.duration_s,
        "settings": result.settings,
        "timings_s": result.timings_s,
    }


def write_outputs(frames: Sequence[np.ndarray], result: GenerationResult, timer) -> None:
    """MP4 (settings inside), first-frame thumbnail, then the sidecar with the stage timings.

    `timer.lap(stage)` / `timer.timings` (generate.Timer) time the encode stage."""
    result.video_path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(frames, result.video_path, result.fps, metadata_of(result))
    write_thumbnail(to_uint8(frames[0]), result.thumbnail_path)
    timer.lap("encode")
    result.timings_s.update(timer.timings)
    write_sidecar(metadata_of(result), result.metadata_path)
