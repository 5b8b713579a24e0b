"""Start-up speed levers: the fast LoRA, the step cache, the attention backend, regional compile.

Run once by load_engine after the memory plan is in place. Compile is warmed up here with a tiny
generation so the first user does not pay for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from wan_demo.core.choices import ATTENTION_BACKENDS
from wan_demo.core.plan import resolve_mode
from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import Settings
from wan_demo.model import speed

log = logging.getLogger(__name__)

# Settings.attention_backend (core.choices) -> diffusers backend name (the same words today)
BACKENDS = {name: name for name in ATTENTION_BACKENDS}
WARMUP_FRAMES = 5  # 4k+1; compile traces the blocks once, shapes are marked dynamic
WARMUP_SIDE = 32  # px; smallest size that exercises every block


@dataclass
class SpeedSetup:
    fast_available: bool = False
    lora: str = ""
    default_mode: str = "quality"
    cache: str = "off"
    cache_threshold: float | None = None
    attention_backend: str = "native"
    compiled: bool = False
    notes: list[str] = field(default_factory=list)

    def info(self) -> dict:
        return dict(self.__dict__)


def setup(pipe, settings: Settings) -> SpeedSetup:
    result = SpeedSetup(attention_backend=set_attention_backend(pipe, settings.attention_backend))
    if settings.lora:
        speed.load_fast_lora(pipe, settings.lora)
        result.fast_available, result.lora = True, settings.lora
    speed.cache_config(settings)  # validate now: a bad cache setting fails at start, not per request
    result.cache = settings.cache
    thresholds = {"fbcache": settings.cache_threshold, "magcache": settings.magcache_threshold}
    result.cache_threshold = thresholds.get(settings.cache)
    try:
        default = resolve_mode(settings, None, result.fast_available)
    except InvalidRequest as e:  # WAN_DEMO_SPEED_MODE=fast without WAN_DEMO_LORA
        raise ValueError(f"speed_mode: {e.rule}") from None
    result.default_mode = default.name
    speed.activate(pipe, default.name, settings, default.steps)  # as the first request wants
    if settings.compile:
        compile_blocks(pipe)
        warm_up(pipe)
        result.compiled = True
    return result


def set_attention_backend(pipe, name: str) -> str:
    """Set the transformer's attention backend without leaking diffusers' global default.

    `set_attention_backend` also sets the process-wide active backend (reset does not undo it):
    we restore that global and keep only the per-processor choice. Falls back to native when the
    backend's package is missing. Returns the backend in use.
    """
    if name not in BACKENDS:
        raise ValueError(f"attention_backend {name!r}: must be one of {', '.join(BACKENDS)}")
    if name == "native":
        return "native"
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    saved = _AttentionBackendRegistry._active_backend
    try:
        pipe.transformer.set_attention_backend(BACKENDS[name])
    except (ImportError, RuntimeError, ValueError) as e:
        log.warning("attention backend %r unavailable (%s); using native", name, str(e)[:200])
        return "native"
    finally:
        _AttentionBackendRegistry._active_backend = saved
    return name


def compile_blocks(pipe) -> None:
    """torch.compile each repeated transformer block once (regional compile: fast to compile)."""
    pipe.transformer.compile_repeated_blocks(fullgraph=True, dynamic=True)


def warm_up(pipe) -> None:
    """One tiny generation (1 step, no decode) so compilation happens at start-up."""
    import torch
    from PIL import Image

    pipe(
        image=Image.new("RGB", (WARMUP_SIDE, WARMUP_SIDE)),
        prompt="warm-up",
        height=WARMUP_SIDE,
        width=WARMUP_SIDE,
        num_frames=WARMUP_FRAMES,
        num_inference_steps=1,
        guidance_scale=1.0,
        output_type="latent",
        generator=torch.Generator("cpu").manual_seed(0),
    )
