"""generate(): the numbered recipe from a validated request to an MP4 on disk.

A 10 s clip is two chained 81-frame segments: the second starts from the first one's last frame
and drops its own first frame (the same picture), so 81 + 80 = 161 frames. Memory stays that of one
segment and each pass matches the model's 81-frame training length. Each later segment may have its
own prompt (`prompt_2`) and is colour-matched to the last frames before it (media.colour), which
corrects the colour drift of chained segments.

Extending a finished clip (`request.parent`) is the same chain with the parent as segment zero: the
new segments start from its last frame, every new segment drops its first frame, and the parent's
frames are copied into the joined MP4 unchanged. While denoising, `on_progress` receives a live
preview every `Settings.preview_every_s` seconds (media.preview).

Issue 24: an end frame (`request.last_image`) conditions the clip's last segment only (a 10 s clip
ends on it, its first segment runs as before); NAG runs inside the pipeline call (model/nag.py);
interpolation x2 (media/interpolate.py) runs on the finished frames before the encode, while the
live preview and the thumbnail come from the generated frames.
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

from wan_demo.core.lineage import lineage
from wan_demo.core.plan import RunPlan, draw_seed, eta_s, plan_run
from wan_demo.core.request import GenerationCancelled, GenerationResult, Progress, ValidRequest
from wan_demo.core.settings import Settings
from wan_demo.media.clip import read_tail
from wan_demo.media.colour import TAIL_FRAMES, match_colours
from wan_demo.media.image import resize_for_model
from wan_demo.media.interpolate import METHOD, interpolate
from wan_demo.media.preview import TEMPORAL_FACTOR, latents_to_rgb
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
    speed.activate(engine.pipe, plan.speed_mode, settings, plan.steps)  # fast LoRA adapter, step cache
    loras = apply_loras(engine, request, plan.speed_mode == "fast")  # community LoRAs: adapters, weights
    seed = draw_seed(request.seed)
    timer.lap("plan")
    # 2. Prompts, one per segment: extended by a rewriter when asked (never fails)
    report(Progress("prompt"))
    prompts, infos = segment_prompts(request, plan, settings)
    timer.lap("prompt")
    # 3. Image at the planned size; an extension also reads the parent's last frames (colour reference)
    report(Progress("image"))
    image = resize_for_model(request.image, (plan.width, plan.height))
    end = resize_for_model(request.last_image, (plan.width, plan.height)) if request.last_image else None
    reference = read_tail(Path(request.parent.path), TAIL_FRAMES)[0] if request.parent else None
    timer.lap("image")
    # 4. Denoise segment by segment, each from the previous segment's last frame, seams colour-matched
    steps = StepReporter(report, stop, plan, settings.preview_every_s)
    frames = denoise(engine, plan, image, prompts, seed, steps, reference, settings.colour_match, end)
    timer.lap("pipeline")
    timer.carve("pipeline", "preview", steps.preview_s)
    timer.timings.update({f"pipeline.{k}": round(v, 4) for k, v in steps.phases.items()})  # a breakdown
    if plan.interpolate > 1:  # 4b. twice the frames, same duration; the parent's last frame anchors a seam
        frames = interpolate(frames, reference[-1] if reference else None, plan.fps)
        timer.lap("interpolate")
    # 5. Write the MP4 (settings and lineage inside; joined to its parent), thumbnail and JSON sidecar
    report(Progress("encode", plan.total_steps, plan.total_steps))
    result = describe(request, plan, engine, settings, seed, prompts, infos, loras)
    parent = Path(request.parent.path) if request.parent else None
    write_outputs(frames, result, timer, parent)
    report(Progress("done", plan.total_steps, plan.total_steps))
    return result


def apply_loras(engine: Engine, request: ValidRequest, fast: bool) -> list[dict]:
    """The request's community LoRAs on (and any others off): what ran, for the metadata."""
    if engine.loras is None:  # an Engine built by hand (tests): only the fast LoRA, if any
        if request.loras:
            raise ValueError("this engine has no LoRA state: load it with load_engine()")
        return []
    return engine.loras.apply(engine.pipe, request.loras, fast)


def segment_prompts(request: ValidRequest, plan: RunPlan, settings: Settings) -> tuple[list[str], list[dict]]:
    """The final prompt of each segment, and how each was made (`prompt_2` for the later ones)."""
    asked = [request.prompt] + [request.prompt_2 or request.prompt] * (plan.segments - 1)
    finals: dict[str, tuple[str, dict]] = {}
    for text in dict.fromkeys(asked):  # each distinct prompt is rewritten once
        off = (text, {"backend": "off"})
        finals[text] = extend_prompt(text, request.image, settings) if request.prompt_extend else off
    return [finals[t][0] for t in asked], [finals[t][1] for t in asked]


def denoise(
    engine: Engine, plan: RunPlan, image: Image.Image, prompts: list[str], seed: int, steps: StepReporter,
    reference: list[np.ndarray] | None = None, colour_match: float = 1.0, end: Image.Image | None = None,
) -> list[np.ndarray]:  # fmt: skip
    """The new frames, as float frames; one CPU generator carries over between segments. A segment
    that continues earlier frames (or the parent's, `reference`) drops its first frame and is
    colour-matched to the last TAIL_FRAMES before it. The last segment ends on `end` when given."""
    generator = torch.Generator("cpu").manual_seed(seed)
    frames: list[np.ndarray] = []
    for k in range(plan.segments):
        steps.phase("encode")
        start = image if not frames else Image.fromarray(to_uint8(frames[-1]))
        steps(k * plan.steps)  # raises GenerationCancelled when asked to stop between segments
        out = run_segment(
            engine, **segment_args(plan, start, prompts[k], end if k == plan.segments - 1 else None),
            generator=generator,
            on_step=lambda i, k=k: steps(k * plan.steps + i + 1), on_latents=steps.latents,
            on_phase=steps.phase,
        )  # fmt: skip
        before = frames[-TAIL_FRAMES:] if frames else reference
        if before is None:
            frames.extend(out)  # the clip's first segment: all 81 frames, nothing to match
        else:
            frames.extend(match_colours(out[1:], before, colour_match))  # out[0] repeats the last frame
    steps.phase(None)  # colour matching counted with the decode
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

    def carve(self, stage: str, part: str, seconds: float) -> None:
        """Report `seconds` of `stage` as their own stage `part` (work done inside it)."""
        self.timings[stage] = round(self.timings.get(stage, 0.0) - seconds, 4)
        self.timings[part] = round(self.timings.get(part, 0.0) + seconds, 4)


class StepReporter:
    """The step callback's body: raise GenerationCancelled when asked to stop, else report progress,
    with a live preview at most every `preview_every_s` seconds (0 = never). `latents(read)` comes
    just before each step's call; the preview's projection runs only when one is due."""

    def __init__(
        self, report: ProgressFn, stop: threading.Event | None, plan: RunPlan, preview_every_s: float
    ):
        self.report, self.stop, self.total, self.every = report, stop, plan.total_steps, preview_every_s
        self.preview_fps = plan.fps / TEMPORAL_FACTOR  # one latent frame = 4 video frames
        self.preview_s = 0.0  # seconds spent making previews (reported as their own stage)
        self.phases: dict[str, float] = {}  # pipeline seconds by phase: encode, denoise, decode
        self._phase: str | None = None
        self._phase_at = 0.0
        self._started, self._reported, self._next_preview = time.perf_counter(), 0, 0.0
        self._read: Callable[[], np.ndarray] | None = None

    def latents(self, read: Callable[[], np.ndarray]) -> None:
        self._read = read

    def phase(self, name: str | None) -> None:
        """From now on the time counts as phase `name` (None: stop counting)."""
        now = time.perf_counter()
        if self._phase is not None:
            self.phases[self._phase] = self.phases.get(self._phase, 0.0) + now - self._phase_at
        self._phase, self._phase_at = name, now

    def __call__(self, done: int) -> None:
        read, self._read = self._read, None
        if self.stop is not None and self.stop.is_set():
            raise GenerationCancelled(f"cancelled after step {done}/{self.total}")
        if done > self._reported:  # segment starts re-check `stop` without a new report
            self._reported = done
            elapsed = time.perf_counter() - self._started
            preview = self._preview(read)
            self.report(
                Progress(
                    "denoise", done, self.total, elapsed, eta_s(done, self.total, elapsed), preview=preview
                )
            )

    def _preview(self, read: Callable[[], np.ndarray] | None) -> np.ndarray | None:
        now = time.perf_counter()
        if read is None or self.every <= 0 or now < self._next_preview:
            return None
        frames = latents_to_rgb(read())
        self._next_preview = now + self.every
        self.preview_s += time.perf_counter() - now
        return frames


def describe(
    request: ValidRequest, plan: RunPlan, engine: Engine, settings: Settings, seed: int,
    prompts: list[str], infos: list[dict], loras: list[dict] | None = None,
) -> GenerationResult:  # fmt: skip
    gen_id = uuid.uuid4().hex
    out = Path(settings.output_dir)
    return GenerationResult(
        id=gen_id,
        video_path=out / f"{gen_id}.mp4",
        thumbnail_path=out / f"{gen_id}.jpg",
        metadata_path=out / f"{gen_id}.json",
        seed_used=seed,
        final_prompt=prompts[0],
        prompt_info=infos[0],
        width=plan.width,
        height=plan.height,
        num_frames=plan.out_frames,
        fps=plan.out_fps,
        duration_s=round(plan.out_frames / plan.out_fps, 4),
        model=engine.model_name,
        is_tiny_model=engine.is_tiny,
        settings=dict(
            prompt=request.prompt,
            prompt_2=request.prompt_2,
            negative_prompt=plan.negative_prompt,
            speed_mode=plan.speed_mode,
            steps=plan.steps,
            guidance=plan.guidance,
            shift=plan.shift,
            segments=plan.segments,
            forwards=plan.forwards,
            colour_match=settings.colour_match,
            **extras(request, plan),
            memory_plan=engine.memory_plan,
            loras=loras or [],  # community LoRAs: name, sha256, scale, layout, source, how applied
            **engine.details,
        ),  # fmt: skip
        lineage=lineage(request, plan, seed, prompts, infos, settings.colour_match),
    )


def extras(request: ValidRequest, plan: RunPlan) -> dict:
    """Issue 24's settings in the metadata: what ran (None = off), so restore can ask for it again."""
    nag = None if plan.nag is None else dict(scale=plan.nag.scale, tau=plan.nag.tau, alpha=plan.nag.alpha)
    interpolation = (
        None if plan.interpolate == 1 else dict(factor=plan.interpolate, method=METHOD, fps=plan.out_fps)
    )
    return dict(nag=nag, interpolation=interpolation, end_frame=plan.end_frame, sampled_fps=plan.fps)
