"""generate(): the numbered recipe from a validated request to an MP4 on disk.

A 10 s clip is two chained 81-frame segments: the second starts from the first one's last frame
and drops its own first frame (the same picture), so 81 + 80 = 161 frames. Memory stays that of one
segment and each pass matches the model's 81-frame training length.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wan_demo.core.plan import RunPlan, draw_seed, eta_s, plan_run
from wan_demo.core.request import GenerationCancelled, GenerationResult, Progress, ValidRequest
from wan_demo.core.settings import Settings
from wan_demo.media.image import resize_for_model
from wan_demo.media.video import to_uint8, write_outputs
from wan_demo.model import speed
from wan_demo.model.engine import Engine
from wan_demo.model.pipeline import run_segment, segment_args
from wan_demo.prompt.extend import extend_prompt

ProgressFn = Callable[[Progress], None]


def generate(
    request: ValidRequest,
    engine: Engine,
    settings: Settings,
    on_progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> GenerationResult:
    if not isinstance(request, ValidRequest):
        raise TypeError("generate() takes a ValidRequest: pass your request through core.validate() first")
    report, timer = on_progress or (lambda _p: None), Timer()
    # 1. Plan the run once: size, segments, steps, guidance, shift, negative prompt
    plan = plan_run(request, settings, engine.plan_info())
    speed.activate(engine.pipe, plan.speed_mode, settings)  # fast LoRA adapter on/off, cache on/off
    seed = draw_seed(request.seed)
    timer.lap("plan")
    # 2. Prompt: extended by a rewriter when asked (never fails)
    report(Progress("prompt"))
    final_prompt, prompt_info = request.prompt, {"backend": "off"}
    if request.prompt_extend:
        final_prompt, prompt_info = extend_prompt(request.prompt, request.image, settings)
    timer.lap("prompt")
    # 3. Image: the planned size at multiples of 16
    report(Progress("image"))
    image = resize_for_model(request.image, (plan.width, plan.height))
    timer.lap("image")
    # 4. Denoise segment by segment, each starting from the previous segment's last frame
    frames = denoise(engine, plan, image, final_prompt, seed, _step_reporter(report, stop, plan))
    timer.lap("pipeline")
    # 5. Write MP4 (settings inside), thumbnail and JSON sidecar under a unique id
    report(Progress("encode", plan.total_steps, plan.total_steps))
    result = describe(request, plan, engine, settings, seed, final_prompt, prompt_info, len(frames))
    write_outputs(frames, result, timer)
    report(Progress("done", plan.total_steps, plan.total_steps))
    return result


def denoise(
    engine: Engine, plan: RunPlan, image: Image.Image, prompt: str, seed: int, tick: Callable[[int], None]
) -> list[np.ndarray]:
    """All segments of the clip, as float frames; one CPU generator carries over between segments."""
    generator = torch.Generator("cpu").manual_seed(seed)
    frames: list[np.ndarray] = []
    for k in range(plan.segments):
        start = image if not frames else Image.fromarray(to_uint8(frames[-1]))
        tick(k * plan.steps)  # raises GenerationCancelled when asked to stop between segments
        out = run_segment(
            engine, **segment_args(plan, start, prompt), generator=generator,
            on_step=lambda i, k=k: tick(k * plan.steps + i + 1),
        )  # fmt: skip
        frames.extend(out if not frames else out[1:])  # a later segment's first frame repeats the last
    return frames


class Timer:
    """Seconds per stage, accumulated (a stage may be lapped more than once)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(self.timings.get(stage, 0.0) + now - self._clock, 4)
        self._clock = now


def _step_reporter(report: ProgressFn, stop: threading.Event | None, plan: RunPlan) -> Callable[[int], None]:
    """Step callback body: raise GenerationCancelled when asked to stop, else report progress."""
    started, total, reported = time.perf_counter(), plan.total_steps, [0]

    def tick(done: int) -> None:
        if stop is not None and stop.is_set():
            raise GenerationCancelled(f"cancelled after step {done}/{total}")
        if done > reported[0]:  # segment starts re-check `stop` without a new report
            reported[0] = done
            elapsed = time.perf_counter() - started
            report(Progress("denoise", done, total, elapsed, eta_s(done, total, elapsed)))

    return tick


def describe(
    request: ValidRequest, plan: RunPlan, engine: Engine, settings: Settings, seed: int,
    final_prompt: str, prompt_info: dict, num_frames: int,
) -> GenerationResult:  # fmt: skip
    gen_id = uuid.uuid4().hex
    out = Path(settings.output_dir)
    return GenerationResult(
        id=gen_id,
        video_path=out / f"{gen_id}.mp4",
        thumbnail_path=out / f"{gen_id}.jpg",
        metadata_path=out / f"{gen_id}.json",
        seed_used=seed,
        final_prompt=final_prompt,
        prompt_info=prompt_info,
        width=plan.width,
        height=plan.height,
        num_frames=num_frames,
        fps=plan.fps,
        duration_s=round(num_frames / plan.fps, 4),
        model=engine.model_name,
        is_tiny_model=engine.is_tiny,
        settings=dict(
            prompt=request.prompt,
            negative_prompt=plan.negative_prompt,
            speed_mode=plan.speed_mode,
            steps=plan.steps,
            guidance=plan.guidance,
            shift=plan.shift,
            segments=plan.segments,
            forwards=plan.forwards,
            memory_plan=engine.memory_plan,
            **engine.details,
        ),  # fmt: skip
    )
