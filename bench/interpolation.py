"""What does frame interpolation x2 cost next to the MP4 encode it always pays? Measured on CPU.

    python -m bench.interpolation [--width 832 --height 480] [--repeats 3]

One 5 s clip's worth of frames (81, a pattern moving 2 px per frame) at the output size, then,
alternated in this one run and repeated (medians, seconds):
  encode 81        write_mp4 of the plain clip (what every generation pays)
  interpolate      media/interpolate.py: 81 -> 161 frames (ffmpeg minterpolate, mi_mode=mci)
  encode 161       write_mp4 of the interpolated clip at 32 fps
Printed with ratios to "encode 81". All figures: measured on CPU (this machine, ffmpeg from
imageio-ffmpeg); a GPU does not change them (both run on the CPU), the model's minutes dwarf them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from wan_demo.core.settings import NATIVE_HEIGHT, NATIVE_WIDTH, SEGMENT_FRAMES
from wan_demo.media.interpolate import interpolate
from wan_demo.media.video import write_mp4


def frames(width: int, height: int, count: int = SEGMENT_FRAMES) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return [
        np.stack([np.sin((xx + 2 * i) / 23), np.cos((yy + i) / 17), np.sin((xx + yy + 3 * i) / 31)], -1)
        * 0.45
        + 0.5
        for i in range(count)
    ]


def timed(work) -> tuple[float, object]:
    start = time.perf_counter()
    out = work()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=NATIVE_WIDTH)
    parser.add_argument("--height", type=int, default=NATIVE_HEIGHT)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    clip = frames(args.width, args.height)
    seconds: dict[str, list[float]] = {"encode 81": [], "interpolate": [], "encode 161": []}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for _ in range(args.repeats):
            seconds["encode 81"].append(timed(lambda: write_mp4(clip, out / "plain.mp4", 16, {}))[0])
            spent, smooth = timed(lambda: interpolate(clip))
            seconds["interpolate"].append(spent)
            seconds["encode 161"].append(timed(lambda s=smooth: write_mp4(s, out / "smooth.mp4", 32, {}))[0])
    base = statistics.median(seconds["encode 81"])
    print(f"{args.width}x{args.height}, 81 frames -> 161, {args.repeats} repeats, medians (measured on CPU)")
    print(f"{'stage':<14} {'seconds':>8} {'x encode 81':>12}")
    for stage, values in seconds.items():
        median = statistics.median(values)
        print(f"{stage:<14} {median:>8.2f} {median / base:>12.2f}")
    extra = statistics.median(seconds["interpolate"]) + statistics.median(seconds["encode 161"]) - base
    print(f"{'added by x2':<14} {extra:>8.2f} {extra / base:>12.2f}")


if __name__ == "__main__":
    main()
