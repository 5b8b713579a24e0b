"""Speed modes: official quality sampling vs the step-distilled fast LoRA.

Placeholder for the speed-mode issue: LoRA, caching, compile and attention backend land here.
"""

from __future__ import annotations

from dataclasses import dataclass

from wan_demo.settings import Settings


@dataclass(frozen=True)
class SpeedMode:
    name: str
    steps: int  # denoising steps per 81-frame segment
    guidance: float  # CFG scale; 1.0 = CFG off (one transformer forward per step)
    shift: float  # scheduler flow shift


MODES = {
    "quality": SpeedMode("quality", steps=40, guidance=5.0, shift=3.0),  # official 480P defaults
    "fast": SpeedMode("fast", steps=4, guidance=1.0, shift=5.0),  # lightx2v distilled LoRA
}


def resolve(settings: Settings, requested: str | None, fast_available: bool) -> SpeedMode:
    """The mode for one request: request > setting > (fast when its LoRA is loaded, else quality)."""
    name = requested or (settings.speed_mode if settings.speed_mode != "auto" else None)
    if name is None:
        name = "fast" if fast_available else "quality"
    mode = MODES[name]
    return SpeedMode(
        name,
        steps=settings.steps or mode.steps,
        guidance=settings.guidance or mode.guidance,
        shift=settings.shift or mode.shift,
    )


def apply(pipe, settings: Settings) -> bool:
    """Load the fast LoRA / cache / compile as configured. Returns whether fast mode is possible."""
    return False
