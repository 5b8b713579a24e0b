"""Frames -> browser-playable H.264 MP4 with the generation settings inside, a JPEG thumbnail and a
JSON sidecar. Files appear atomically (written to a temp name, then renamed).

An extension is joined to its parent without re-encoding the parent: the new frames are encoded
with the same settings and the two streams are concatenated (ffmpeg's concat demuxer, stream copy),
so the parent's frames decode exactly as before."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
from PIL import Image

from wan_demo.core.request import GenerationResult

METADATA_KEY = "comment"  # MP4 udta tag that ffmpeg writes and reads back
THUMBNAIL_QUALITY = 90  # JPEG quality, 0-100
VIDEO_QUALITY = 5  # imageio-ffmpeg VBR scale 0-10, as diffusers' export_to_video
JOIN_TIMEOUT_S = 120.0  # a stream copy of <= 70 s of 480P video takes well under a second
MAX_PROBE_BYTES = 200 * 2**20  # metadata reads refuse larger files (ours are a few MB)
PROBE_TIMEOUT_S = 10.0  # an ffmpeg metadata read of an untrusted file gets this long


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
    writer = open_writer(tmp, width, height, fps, metadata)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(to_uint8(frame)))
        writer.close()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def open_writer(path: Path, width: int, height: int, fps: int, metadata: dict[str, Any]) -> Generator:
    """An imageio-ffmpeg writer (send uint8 (H, W, 3) frames, then close()) with the one set of encoder
    settings every MP4 of ours uses: streams written with it can be joined by stream copy."""
    writer = imageio_ffmpeg.write_frames(
        str(path),
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
    return writer


def join_mp4(
    parent: Path, frames: Sequence[np.ndarray], path: Path, fps: int, metadata: dict[str, Any]
) -> Path:
    """`parent` (an MP4 of ours, same size and fps) followed by `frames`: the parent's stream is copied,
    not re-encoded. Intermediate files are `.part` files beside `path`, removed on any outcome."""
    segment, listing, tmp = (path.with_name(f"{path.name}.{name}.part") for name in ("new", "list", "join"))
    tag = f"{METADATA_KEY}={json.dumps(metadata, ensure_ascii=False)}"
    try:
        write_mp4(frames, segment, fps, {})
        listing.write_text("".join(f"file '{_concat_quote(p)}'\n" for p in (Path(parent), segment)))
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "concat", "-safe", "0",
             "-i", str(listing), "-c", "copy", "-movflags", "+faststart", "-metadata", tag,
             "-f", "mp4", str(tmp)],
            check=True, capture_output=True, timeout=JOIN_TIMEOUT_S,
        )  # fmt: skip
        os.replace(tmp, path)
    finally:
        for part in (segment, listing, tmp):
            part.unlink(missing_ok=True)
    return path


def _concat_quote(path: Path) -> str:
    """A path for ffmpeg's concat list: absolute, single quotes escaped as '\\''."""
    return str(Path(path).resolve()).replace("'", "'\\''")


def first_frame(path: Path) -> np.ndarray:
    """The first frame of an MP4 as uint8 (H, W, 3)."""
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        width, height = next(reader)["size"]
        return np.frombuffer(next(reader), np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


def _shape(frames: Sequence[np.ndarray]) -> str:
    return str(getattr(frames[0], "shape", "?")) if len(frames) else "nothing"


class NoMetadata(ValueError):
    """The file is not an MP4 carrying our settings JSON (or could not be read safely)."""


def read_mp4_metadata(path: Path, max_bytes: int = MAX_PROBE_BYTES) -> dict[str, Any]:
    """The JSON stored by write_mp4, read back with the bundled ffmpeg. Safe on untrusted uploads:
    size capped, the file must open like an MP4 (an `ftyp` box), ffmpeg is held to its MP4 demuxer
    with local-file access only (so no playlist or URL inside can make it open anything else) and
    to a time limit. Raises NoMetadata."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise NoMetadata(f"cannot read the file ({type(e).__name__})") from None
    if size > max_bytes or head[4:8] != b"ftyp":
        raise NoMetadata("not an MP4 file" if head[4:8] != b"ftyp" else f"larger than {max_bytes} bytes")
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-protocol_whitelist", "file",
        "-f", "mov", "-i", str(path), "-f", "ffmetadata", "-",
    ]  # fmt: skip
    try:
        out = subprocess.run(command, capture_output=True, timeout=PROBE_TIMEOUT_S, check=True).stdout
    except (subprocess.SubprocessError, OSError) as e:
        raise NoMetadata(f"ffmpeg could not read it ({type(e).__name__})") from None
    for line in _unescape_ffmetadata(out.decode("utf-8", errors="replace")):
        key, _, value = line.partition("=")
        if key == METADATA_KEY:
            try:
                data = json.loads(value)
            except ValueError:
                break
            if isinstance(data, dict):
                return data
            break
    raise NoMetadata(f"no {METADATA_KEY!r} settings JSON in the file")


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
        "lineage": result.lineage,
        "timings_s": result.timings_s,
    }


def read_sidecar(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_outputs(
    frames: Sequence[np.ndarray], result: GenerationResult, timer, parent: Path | None = None
) -> None:
    """MP4 (settings and lineage inside), first-frame thumbnail, then the sidecar with the stage
    timings. With a `parent` (an MP4 of ours) the MP4 is the parent followed by `frames`.

    `timer.lap(stage)` / `timer.timings` (generate.Timer) time the encode stage."""
    result.video_path.parent.mkdir(parents=True, exist_ok=True)
    if parent is None:
        write_mp4(frames, result.video_path, result.fps, metadata_of(result))
        first = to_uint8(frames[0])
    else:
        join_mp4(parent, frames, result.video_path, result.fps, metadata_of(result))
        first = first_frame(parent)
    write_thumbnail(first, result.thumbnail_path)
    timer.lap("encode")
    result.timings_s.update(timer.timings)
    write_sidecar(metadata_of(result), result.metadata_path)
