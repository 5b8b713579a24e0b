"""The run plan: every number a generation needs, decided once and read by every consumer.

`plan_run(request, settings, engine)` is pure (no model, no I/O): output size, segments, frames,
steps, guidance, shift, negative prompt, transformer forwards and an estimated duration.
generate() runs it; the UI's ETA, the REST queue ETA and the ZeroGPU lease read the same plan.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from wan_demo.core.controls import NAG_DEFAULTS, check_mode, nag_wanted
from wan_demo.core.request import GenerationResult, InvalidRequest, ValidRequest
from wan_demo.core.settings import FPS, MAX_AREA, SEED_MAX, SEGMENT_FRAMES, SIZE_MULTIPLE, Settings

SEGMENT_SECONDS = 5  # one 81-frame segment is 5.06 s at 16 fps

# Our own list of failure modes to steer away from (used when the user gives no negative prompt):
# quality defects, frozen or jittery motion, and artefacts typical of image-to-video models.
DEFAULT_NEGATIVE_PROMPT = (
    "low quality, worst quality, blurry, out of focus, overexposed, underexposed, washed-out colours, "
    "jpeg artifacts, noise, grain, watermark, logo, text overlay, subtitles, static frame, frozen "
    "image, still picture, flicker, jitter, camera shake, sudden cuts, distorted face, deformed "
    "hands, extra fingers, extra limbs, malformed body, melting objects, morphing background, "
    "duplicated subjects, cluttered background, walking backwards"
)


@dataclass(frozen=True)
class SpeedMode:
    name: str
    steps: int  # denoising steps per 81-frame segment
    guidance: float  # CFG scale; 1.0 = CFG off (one transformer forward per step)
    shift: float  # scheduler flow shift


MODES = {
    "quality": SpeedMode("quality", steps=40, guidance=5.0, shift=3.0),  # official 480P defaults
    "fast": SpeedMode("fast", steps=4, guidance=1.0, shift=5.0),  # lightx2v step+CFG-distilled LoRA
}


@dataclass(frozen=True)
class CostModel:
    """Seconds for the parts of a run at the full 81 x 480 x 832 segment size (scaled by pixels)."""

    forward_s: float  # one transformer forward
    decode_s: float  # VAE decode of one segment
    setup_s: float  # encoders, prompt, MP4 encode: once per clip


# Estimated for one H100-class GPU from the published H200 figure (80 forwards in ~366 s);
# the Worker replaces it with its own measured seconds per forward after each run.
DEFAULT_COST = CostModel(forward_s=5.0, decode_s=8.0, setup_s=10.0)


@dataclass(frozen=True)
class EngineInfo:
    """What the plan and the UI need to know about the loaded model (model.engine.Engine.plan_info)."""

    max_area: int = MAX_AREA  # output pixel budget
    fast_available: bool = False  # the step-distilled LoRA is loaded
    cost: CostModel = DEFAULT_COST
    is_tiny: bool = False  # the built-in random-weight model (its output is noise)
    banner: str = ""  # one line for the UI and the log: model, device, memory plan


@dataclass(frozen=True)
class Nag:
    """Normalized attention guidance on the text cross-attention (model/nag.py)."""

    scale: float  # extrapolation away from the negative prompt's attention (1 = none)
    tau: float  # cap on the norm ratio guided / positive, per token
    alpha: float  # share of the guided attention blended into the positive one


@dataclass(frozen=True)
class RunPlan:
    width: int  # output size in pixels, multiples of 16
    height: int
    segments: int  # chained 81-frame passes
    frames_per_segment: int
    num_frames: int  # in the finished clip (each later segment drops its repeated first frame)
    parent_frames: int  # frames of the clip being extended, copied unchanged in front (0 = none)
    fps: int
    steps: int  # denoising steps per segment
    guidance: float
    shift: float
    speed_mode: str  # "quality" | "fast"
    negative_prompt: str
    forwards: int  # transformer forwards over the clip (2 per step with CFG)
    est_seconds: float  # estimated wall time with the engine's cost model
    nag: Nag | None = None  # fast mode with a negative prompt / nag_* fields; None = off
    interpolate: int = 1  # frame interpolation factor (media/interpolate.py); 1 = off
    end_frame: bool = False  # the last segment ends on the request's last_image

    @property
    def cfg(self) -> bool:
        return self.guidance > 1.0

    @property
    def total_steps(self) -> int:
        return self.steps * self.segments

    @property
    def out_fps(self) -> int:
        """Frame rate of the finished clip: the sampling rate times the interpolation factor."""
        return self.fps * self.interpolate

    @property
    def out_frames(self) -> int:
        """Frames of the finished clip: interpolation puts factor - 1 frames between each pair of
        generated frames (81 -> 161 at x2); an extension's parent frames are kept as they are."""
        generated = self.num_frames - self.parent_frames
        if self.parent_frames:  # the seam pair (parent's last, first new) is interpolated too
            return self.parent_frames + generated * self.interpolate
        return (generated - 1) * self.interpolate + 1


def fit_size(width: int, height: int, max_area: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(width, height) with the input's aspect ratio inside `max_area` pixels, multiples of `multiple`.

    The official Wan rule: side = round(sqrt(max_area * ratio)) // multiple * multiple.
    832x480 -> (832, 480); 1:1 -> (624, 624); 4:3 -> (720, 544); 1920x1080 -> (832, 464).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    ratio = height / width
    out_h = round(math.sqrt(max_area * ratio)) // multiple * multiple
    out_w = round(math.sqrt(max_area / ratio)) // multiple * multiple
    return max(out_w, multiple), max(out_h, multiple)


def segments_for(video_length_s: int) -> int:
    if video_length_s <= 0 or video_length_s % SEGMENT_SECONDS:
        raise ValueError(f"video length must be a multiple of {SEGMENT_SECONDS} s, got {video_length_s}")
    return video_length_s // SEGMENT_SECONDS


def frames_for(video_length_s: int) -> int:
    """5 s -> 81, 10 s -> 161: each extra segment adds 80 new frames (its first repeats the last)."""
    return 1 + segments_for(video_length_s) * (SEGMENT_FRAMES - 1)


def draw_seed(seed: int) -> int:
    """-1 -> a fresh random seed in 0..SEED_MAX; anything else is returned unchanged."""
    return secrets.randbelow(SEED_MAX + 1) if seed == -1 else seed


def batch_seeds(seed: int, count: int) -> list[int]:
    """The seeds of a batch: seed, seed + 1, ... (wrapping past SEED_MAX to 0); -1 stays -1 for each
    job, so each draws its own random seed when it runs."""
    return [seed if seed == -1 else (seed + k) % (SEED_MAX + 1) for k in range(count)]


def eta_s(step: int, total: int, elapsed_s: float) -> float | None:
    """Remaining seconds by linear extrapolation over finished steps; None before the first."""
    return None if step <= 0 else elapsed_s / step * (total - step)


def resolve_mode(settings: Settings, requested: str | None, fast_available: bool) -> SpeedMode:
    """The mode for one request: request > setting > (fast when its LoRA is loaded, else quality).

    Settings.steps / guidance / shift (0 = unset) override the mode's own defaults."""
    name = requested or (settings.speed_mode if settings.speed_mode != "auto" else None)
    if name is None:
        name = "fast" if fast_available else "quality"
    if name not in MODES:
        raise InvalidRequest("speed_mode", f"{name!r} is unknown; use one of {', '.join(MODES)}")
    if name == "fast" and not fast_available:
        raise InvalidRequest(
            "speed_mode",
            "'fast' needs the step-distilled LoRA (setting `lora`), which this server has not loaded; "
            "use 'quality'",
        )
    mode = MODES[name]
    return SpeedMode(
        name,
        steps=settings.steps or mode.steps,
        guidance=settings.guidance or mode.guidance,
        shift=settings.shift or mode.shift,
    )


def estimate_seconds(cost: CostModel, width: int, height: int, segments: int, forwards: int) -> float:
    """Transformer work scales with pixels (same frame count per segment); the VAE too."""
    scale = width * height / MAX_AREA
    return cost.setup_s + forwards * cost.forward_s * scale + segments * cost.decode_s * scale


def plan_run(request: ValidRequest, settings: Settings, engine: EngineInfo) -> RunPlan:
    """Everything one generation will do. Raises InvalidRequest when the engine cannot serve it or
    when the resolved speed mode would ignore one of the request's values (core/controls.py)."""
    mode = resolve_mode(settings, request.speed_mode, engine.fast_available)
    steps = request.steps or mode.steps
    guidance = mode.guidance if request.guidance is None else request.guidance
    check_mode(request.params(), mode.name, guidance)
    width, height, parent_frames = _size_of(request, engine)
    fps, factor = request.fps or settings.fps or FPS, request.interpolate or 1
    if request.parent is not None and request.parent.fps != fps * factor:  # streams are joined as they are
        raise InvalidRequest(
            "video", f"is {request.parent.fps} fps; this request continues {fps * factor} fps videos"
        )
    segments = segments_for(request.video_length_s)
    forwards = steps * segments * (2 if guidance > 1.0 else 1)
    # extending: every new segment's first frame repeats the frame before it, so each adds 80
    added = segments * (SEGMENT_FRAMES - 1)
    num_frames = parent_frames + added if parent_frames else frames_for(request.video_length_s)
    return RunPlan(
        width=width,
        height=height,
        segments=segments,
        frames_per_segment=SEGMENT_FRAMES,
        num_frames=num_frames,
        parent_frames=parent_frames,
        fps=fps,
        steps=steps,
        guidance=guidance,
        shift=request.flow_shift or mode.shift,
        speed_mode=mode.name,
        negative_prompt=request.negative_prompt or DEFAULT_NEGATIVE_PROMPT,
        forwards=forwards,
        est_seconds=round(estimate_seconds(engine.cost, width, height, segments, forwards), 1),
        nag=nag_of(request, mode.name),
        interpolate=factor,
        end_frame=request.last_image is not None,
    )


def nag_of(request: ValidRequest, mode: str) -> Nag | None:
    """NAG's numbers when it runs (core/controls.nag_wanted), unset ones at NAG_DEFAULTS."""
    if not nag_wanted(request.params(), mode):
        return None
    given = (request.nag_scale, request.nag_tau, request.nag_alpha)
    return Nag(
        *(default if value is None else value for value, default in zip(given, NAG_DEFAULTS, strict=True))
    )


def _size_of(request: ValidRequest, engine: EngineInfo) -> tuple[int, int, int]:
    """(width, height, parent frames): a continued clip keeps its parent's size, which must fit the
    engine's pixel budget; a new clip fits its image into the budget."""
    parent = request.parent
    if parent is None:
        return *fit_size(*request.image.size, engine.max_area), 0
    if parent.width * parent.height > engine.max_area:
        budget = f"{engine.max_area} pixels"
        raise InvalidRequest("video", f"{parent.width}x{parent.height} is larger than this model's {budget}")
    return parent.width, parent.height, parent.num_frames


def calibrate(cost: CostModel, result: GenerationResult, weight: float = 0.5) -> CostModel:
    """Blend a finished run's measured seconds per transformer forward (VAE share removed by the
    current estimate) and its set-up seconds into the cost model; `weight` = the new run's share."""
    forwards, segments = result.settings.get("forwards", 0), result.settings.get("segments", 1)
    pipeline_s = result.timings_s.get("pipeline", 0.0)
    if not forwards or pipeline_s <= 0:
        return cost
    scale = result.width * result.height / MAX_AREA
    forward_s = max(pipeline_s - segments * cost.decode_s * scale, 0.0) / (forwards * scale)
    setup_s = sum(v for k, v in result.timings_s.items() if not k.startswith("pipeline"))  # + breakdown
    return CostModel(
        forward_s=round((1 - weight) * cost.forward_s + weight * forward_s, 4),
        decode_s=cost.decode_s,
        setup_s=round((1 - weight) * cost.setup_s + weight * setup_s, 4),
    )
