"""The request and result types shared by the Gradio UI, the Gradio API, the REST API and Python.

An edge builds a `GenerationRequest` from what the user sent, `validate()` turns it into a
`ValidRequest` once, and only that type goes further (job store, worker, generate()).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


class InvalidRequest(ValueError):
    """Bad user input. `field` names the input; the message names the value and the rule."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class GenerationCancelled(Exception):
    """Raised from the step callback when the caller asked to stop; no VAE decode runs."""


@dataclass(frozen=True)
class GenerationRequest:
    """What a user asks for, unchecked. Optional fields left as None take the speed mode's defaults."""

    image: Image.Image | None  # decoded input still (media.image.decode_image for untrusted bytes)
    prompt: Any
    video_length_s: Any = 5  # 5 or 10 (validate() also accepts "5" / "10" from form widgets)
    seed: Any = -1  # -1 = draw a random seed
    prompt_extend: Any = False
    negative_prompt: Any = None  # None or "" = the default negative prompt
    steps: Any = None
    guidance: Any = None
    speed_mode: Any = None  # "quality" | "fast"; None = the server's default


# Fields of ValidRequest stored as JSON with a job (everything but the pixels).
PARAM_FIELDS = (
    "prompt", "video_length_s", "seed", "prompt_extend", "negative_prompt", "steps", "guidance", "speed_mode",
)  # fmt: skip


@dataclass(frozen=True)
class ValidRequest:
    """A checked request: upright RGB image, trimmed prompt, values in range. Made by validate()."""

    image: Image.Image
    prompt: str
    video_length_s: int = 5
    seed: int = -1
    prompt_extend: bool = False
    negative_prompt: str | None = None
    steps: int | None = None
    guidance: float | None = None
    speed_mode: str | None = None

    def params(self) -> dict[str, Any]:
        """JSON-safe fields (no pixels): stored with a job, shown in metadata and logs."""
        return {name: getattr(self, name) for name in PARAM_FIELDS}

    @classmethod
    def restore(cls, params: dict[str, Any], image: Image.Image) -> ValidRequest:
        """Rebuild a request that validate() accepted earlier (the job store keeps its params)."""
        return cls(image=image, **{name: params[name] for name in PARAM_FIELDS if name in params})


@dataclass(frozen=True)
class Progress:
    """One progress report. Steps count over the whole clip (all segments)."""

    stage: str  # "queued" | "prompt" | "image" | "denoise" | "encode" | "done"
    step: int = 0
    total_steps: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None  # None while unknown
    queue_position: int | None = None

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    def message(self) -> str:
        if self.stage == "queued":
            where = f"position {self.queue_position}" if self.queue_position else ""
            eta = f"about {self.eta_s:.0f} s" if self.eta_s is not None else ""
            detail = ", ".join(p for p in (where, eta) if p)
            return f"queued ({detail})" if detail else "queued"
        if self.stage != "denoise":
            return self.stage
        eta = f", ETA {self.eta_s:.0f} s" if self.eta_s is not None else ""
        return f"step {self.step}/{self.total_steps}{eta}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationResult:
    """Everything a caller gets back. Paths point into the output folder."""

    id: str  # unique per generation; names the files
    video_path: Path
    thumbnail_path: Path
    metadata_path: Path
    seed_used: int
    final_prompt: str
    prompt_info: dict[str, Any]  # which prompt backend produced final_prompt and why
    width: int
    height: int
    num_frames: int
    fps: int
    duration_s: float
    model: str  # hub id, folder, or "tiny (random weights: output is noise)"
    is_tiny_model: bool
    timings_s: dict[str, float] = field(default_factory=dict)  # per stage, seconds
    settings: dict[str, Any] = field(default_factory=dict)  # steps, guidance, shift, mode ...
