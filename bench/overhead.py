"""How much of a generation is NOT the model? Tiny model at the real output size, one run.

    python -m bench.overhead [--steps 2] [--repeats 3]

Prints two tables:
1. stage times of one 5 s clip at 832x480 (81 frames) through generate(): pipeline vs the rest
   (validate at the edge, plan, prompt, image prep, live preview, MP4 encode + thumbnail, JSON
   sidecar). Goal: rest <= 5 %. The live preview runs after EVERY step here (the worst case; the
   server makes one at most every Settings.preview_every_s): its projection inside generate() plus
   the WEBP encode + write the worker does. Goal: preview <= 3 %.
2. our MP4 writer vs a bare diffusers.utils.export_to_video of the same frames, alternated and
   repeated in this one run (medians). Goal: ours <= 1.2x bare.
The tiny model's transformer is small, so the pipeline share here is a LOWER bound: with the real
14B model the pipeline takes minutes and the overhead share shrinks further.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from wan_demo.core.request import GenerationRequest, Progress
from wan_demo.core.settings import MAX_AREA, Settings
from wan_demo.core.validate import validate
from wan_demo.generate import generate
from wan_demo.jobs.previews import PreviewSink
from wan_demo.jobs.storage.local import LocalStorage
from wan_demo.media.video import write_mp4
from wan_demo.model.engine import load_engine


class PreviewWriter:
    """What the worker does with each preview (jobs/previews.py: encode the animated WEBP, store it
    durably in local storage, drop the one before last), timed."""

    def __init__(self, folder: Path):
        self.sink = PreviewSink(LocalStorage(folder, folder / "inputs"), "rest", "bench")
        self.seconds, self.count = 0.0, 0

    def __call__(self, progress: Progress) -> None:
        if progress.preview is not None:
            started = time.perf_counter()
            self.sink(progress.preview)
            self.seconds += time.perf_counter() - started
            self.count += 1


def stage_table(settings: Settings) -> tuple[dict[str, float], Path]:
    engine = load_engine(settings)
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((480, 832, 3)) * 255).astype(np.uint8))
    writer = PreviewWriter(Path(settings.output_dir))
    started = time.perf_counter()
    request = validate(GenerationRequest(image, "a cat walks along the beach", seed=0))  # the edge's step
    validated = time.perf_counter()
    result = generate(request, engine, settings.replace(preview_every_s=1e-9), writer)  # every step
    total = time.perf_counter() - started
    timings = {"validate": validated - started, **result.timings_s}
    timings = {k: v for k, v in timings.items() if not k.startswith("pipeline.")}  # a breakdown of pipeline
    timings["pipeline"] -= writer.seconds  # the writes ran inside the pipeline's step callback
    timings["preview"] += writer.seconds  # projection (generate) + WEBP encode and write (worker)
    timings["sidecar + rest"] = max(total - sum(timings.values()), 0.0)
    print(f"\n1. one 5 s clip, tiny model, {result.width}x{result.height}, {result.num_frames} frames, "
          f"{settings.steps} steps")  # fmt: skip
    print(f"{'stage':<16}{'seconds':>10}{'share':>9}")
    for stage, seconds in timings.items():
        print(f"{stage:<16}{seconds:>10.3f}{seconds / total:>8.1%}")
    rest = total - timings["pipeline"]
    print(f"{'TOTAL':<16}{total:>10.3f}")
    print(f"non-model overhead: {rest:.3f} s = {rest / total:.2%} of total (goal <= 5 %)")
    share = timings["preview"] / total
    each = timings["preview"] / max(writer.count, 1)
    print(f"live preview: {writer.count} previews, {each * 1000:.1f} ms each, {share:.2%} of total", end="")
    print(" (goal <= 3 %)")
    return timings, result.video_path


def encoder_table(video_path: Path, repeats: int, out_dir: Path) -> None:
    import imageio_ffmpeg
    from diffusers.utils import export_to_video

    reader = imageio_ffmpeg.read_frames(str(video_path))
    width, height = next(reader)["size"]
    frames = np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])
    floats = frames.astype(np.float32) / 255.0  # what the pipeline hands over (output_type="np")
    ours, bare = [], []
    for i in range(repeats):  # alternate so machine noise hits both alike
        t0 = time.perf_counter()
        write_mp4(floats, out_dir / f"ours{i}.mp4", 16, {"prompt": "bench"})
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        export_to_video(list(floats), str(out_dir / f"bare{i}.mp4"), fps=16)
        bare.append(time.perf_counter() - t0)
    o, b = statistics.median(ours), statistics.median(bare)
    print(f"\n2. MP4 encode of the same {len(frames)} frames at {width}x{height}, median of {repeats}")
    print(f"{'encoder':<34}{'seconds':>10}{'ratio':>8}")
    print(f"{'bare diffusers export_to_video':<34}{b:>10.3f}{1.0:>8.2f}")
    print(f"{'ours (H.264 + metadata)':<34}{o:>10.3f}{o / b:>8.2f}   (goal <= 1.2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        settings = Settings(
            model="tiny", device="cpu", tiny_max_area=MAX_AREA, steps=args.steps, output_dir=out
        )
        _, video = stage_table(settings)
        encoder_table(video, args.repeats, out)


if __name__ == "__main__":
    main()
