"""generate(): the numbered recipe from a request to an MP4 on disk.

A 10 s clip is two chained 81-frame segments: the second starts from the first one's last frame
and drops its own first frame (the same picture), so 81 + 80 = 161 frames. Memory stays that of one
segment and each pass matches the model's 81-frame training length.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wan_demo.core.request import GenerationRequest, GenerationResult, Progress
from wan_demo.core.settings import SEED_MAX, SEGMENT_FRAMES, Settings
from wan_demo.core.validate import validate
from wan_demo.media.image import resize_for_model
from wan_demo.media.video import to_uint8, write_mp4, write_sidecar, write_thumbnail
from wan_demo.model import speed
from wan_demo.model.pipeline import Engine, GenerationCancelled, run_segment
from wan_demo.prompt.extend import DEFAULT_NEGATIVE_PROMPT, extend_prompt

SEGMENT_SECONDS = 5  # one 81-frame segment is 5.06 s at 16 fps

ProgressFn = Callable[[Progress], None]


def segments_for(video_length_s: int) -> int:
    if video_length_s % SEGMENT_SECONDS:
        raise ValueError(f"video length must be a multiple of {SEGMENT_SECONDS} s, got {video_length_s}")
    return video_length_s // SEGMENT_SECONDS


def frames_for(video_length_s: int) -> int:
    """5 s -> 81, 10 s -> 161: each extra segment adds 80 new frames (its first repeats the last)."""
    return 1 + segments_for(video_length_s) * (SEGMENT_FRAMES - 1)


def draw_seed(seed: int) -> int:
    """-1 -> a fresh random seed in 0..SEED_MAX; anything else is returned unchanged."""
    return secrets.randbelow(SEED_MAX + 1) if seed == -1 else seed


def eta_s(step: int, total: int, elapsed_s: float) -> float | None:
    """Remaining seconds by linear extrapolation over finished steps; None before the first."""
    return None if step <= 0 else elapsed_s / step * (total - step)


def generate(
    request: GenerationRequest,
    engine: Engine,
    settings: Settings,
    on_progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> GenerationResult:
    report = on_progress or (lambda _p: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(timings.get(stage, 0.0) + now - clock, 4)
        clock = now

    # 1. Check inputs and resolve defaults
    request = validate(request)
    mode = speed.resolve(settings, request.speed_mode, engine.fast_available)
    speed.activate(engine.pipe, mode, settings)  # fuse/unfuse the fast LoRA, cache on/off
    steps = request.steps or mode.steps
    guidance = mode.guidance if request.guidance is None else request.guidance
    seed = draw_seed(request.seed)
    lap("validate")
    # 2. Prompt
    report(Progress("prompt"))
    if request.prompt_extend:
        final_prompt, prompt_info = extend_prompt(request.prompt, request.image, settings)
    else:
        final_prompt, prompt_info = request.prompt, {"backend": "off"}
    negative_prompt = request.negative_prompt or DEFAULT_NEGATIVE_PROMPT
    lap("prompt")
    # 3. Image: fit the pixel budget at multiples of 16
    report(Progress("image"))
    image = resize_for_model(request.image, engine.max_area)
    lap("image")
    # 4. Denoise segment by segment, each starting from the previous segment's last frame
    n_segments = segments_for(request.video_length_s)
    tick = _step_reporter(report, stop, steps * n_segments)
    generator = torch.Generator("cpu").manual_seed(seed)
    segments: list[np.ndarray] = []
    for k in range(n_segments):
        if stop is not None and stop.is_set():
            raise GenerationCancelled(f"cancelled before segment {k + 1}/{n_segments}")
        start = to_uint8(segments[-1][-1]) if segments else None
        frames = run_segment(
            engine,
            image=image if start is None else Image.fromarray(start),
            prompt=final_prompt,
            negative_prompt=negative_prompt,
            width=image.width,
            height=image.height,
            num_frames=SEGMENT_FRAMES,
            steps=steps,
            guidance=guidance,
            shift=mode.shift,
            generator=generator,
            on_step=lambda i, k=k: tick(k * steps + i + 1),
        )
        segments.append(frames if start is None else frames[1:])
    num_frames = sum(len(s) for s in segments)
    lap("pipeline")
    # 5. Write MP4 (settings inside), thumbnail and JSON sidecar under a unique id
    report(Progress("encode", steps * n_segments, steps * n_segments))
    gen_id = uuid.uuid4().hex
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = GenerationResult(
        id=gen_id,
        video_path=out / f"{gen_id}.mp4",
        thumbnail_path=out / f"{gen_id}.jpg",
        metadata_path=out / f"{gen_id}.json",
        seed_used=seed,
        final_prompt=final_prompt,
        prompt_info=prompt_info,
        width=image.width,
        height=image.height,
        num_frames=num_frames,
        fps=settings.fps,
        duration_s=round(num_frames / settings.fps, 4),
        model=engine.model_name,
        is_tiny_model=engine.is_tiny,
        settings=dict(
            prompt=request.prompt,
            negative_prompt=negative_prompt,
            speed_mode=mode.name,
            steps=steps,
            guidance=guidance,
            shift=mode.shift,
            segments=n_segments,
            memory_plan=engine.memory_plan,
            **engine.info,
        ),  # fmt: skip
    )
    metadata = metadata_of(result)
    write_mp4([f for s in segments for f in s], result.video_path, settings.fps, metadata)
    write_thumbnail(to_uint8(segments[0][0]), result.thumbnail_path)
    lap("encode")
    result.timings_s.update(timings)
    write_sidecar(metadata_of(result), result.metadata_path)
    report(Progress("done", steps * n_segments, steps * n_segments))
    return result


def _step_reporter(report: ProgressFn, stop: threading.Event | None, total: int) -> Callable[[int], None]:
    """Step callback body: raise GenerationCancelled when asked to stop, else report progress."""
    started = time.perf_counter()

    def tick(done: int) -> None:
        if stop is not None and stop.is_set():
            raise GenerationCancelled(f"cancelled after step {done}/{total}")
        elapsed = time.perf_counter() - started
        report(Progress("denoise", done, total, elapsed, eta_s(done, total, elapsed)))

    return tick


def metadata_of(result: GenerationResult) -> dict:
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
