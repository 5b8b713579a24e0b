"""Input checks shared by every entry point. One error type: InvalidRequest.

Only the UI turns InvalidRequest into gr.Error and only the REST layer into an HTTP status.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from wan_demo.core.request import GenerationRequest, InvalidRequest
from wan_demo.core.settings import MAX_PROMPT_CHARS, SEED_MAX, VIDEO_LENGTHS_S
from wan_demo.media.image import prepare_input

__all__ = ["InvalidRequest", "validate"]

SPEED_MODES = ("quality", "fast")
MAX_STEPS = 100
MAX_GUIDANCE = 20.0


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt", f"must be a string, got {type(prompt).__name__}")
    prompt = prompt.strip()
    if not prompt:
        raise InvalidRequest("prompt", "must not be empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest("prompt", f"is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    return prompt


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        if isinstance(seed, float) and seed.is_integer():
            seed = int(seed)
        else:
            raise InvalidRequest("seed", f"must be an integer, got {_short(seed)}")
    if not -1 <= seed <= SEED_MAX:
        raise InvalidRequest("seed", f"{seed} is out of range; use -1 (random) or 0..{SEED_MAX}")
    return seed


def check_video_length(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or value not in VIDEO_LENGTHS_S:
        allowed = " or ".join(str(v) for v in VIDEO_LENGTHS_S)
        raise InvalidRequest("video_length", f"{_short(value)} is not allowed; use {allowed} (seconds)")
    return int(value)


def check_optional_range(name: str, value: Any, low: float, high: float, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(name, f"must be a number, got {_short(value)}")
    if kind is int and not float(value).is_integer():
        raise InvalidRequest(name, f"must be a whole number, got {value}")
    if not low <= value <= high:
        raise InvalidRequest(name, f"{value} is out of range {low}..{high}")
    return kind(value)


def validate(request: GenerationRequest) -> GenerationRequest:
    """Check every field and return a normalised copy (trimmed prompt, RGB upright image)."""
    speed = request.speed_mode or None
    if speed is not None and speed not in SPEED_MODES:
        raise InvalidRequest("speed_mode", f"{_short(speed)} is unknown; use one of {', '.join(SPEED_MODES)}")
    negative = request.negative_prompt
    if negative is not None and not isinstance(negative, str):
        raise InvalidRequest("negative_prompt", "must be a string")
    return replace(
        request,
        image=prepare_input(request.image),
        prompt=check_prompt(request.prompt),
        video_length_s=check_video_length(request.video_length_s),
        seed=check_seed(request.seed),
        prompt_extend=bool(request.prompt_extend),
        negative_prompt=negative.strip() if negative and negative.strip() else None,
        steps=check_optional_range("steps", request.steps, 1, MAX_STEPS, int),
        guidance=check_optional_range("guidance", request.guidance, 0.0, MAX_GUIDANCE, float),
        speed_mode=speed,
    )
