"""The request and result types shared by the Gradio UI, the Gradio API and the REST API."""

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


@dataclass(frozen=True)
class GenerationRequest:
    """What a user asks for. Optional fields left as None take the speed mode's defaults."""

    image: Image.Image  # decoded input still; validate() fixes orientation and mode
    prompt: str
    video_length_s: int = 5  # 5 or 10
    seed: int = -1  # -1 = draw a random seed
    prompt_extend: bool = False
    negative_prompt: str | None = None  # None = the default negative prompt
    steps: int | None = None
    guidance: float | None = None
    speed_mode: str | None = None  # "quality" | "fast"; None = the server's default

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary (no pixels) for logs, job records and metadata."""
        d = {k: v for k, v in asdict(self).items() if k != "image"}
        d["image_size"] = list(self.image.size)
        return d


@dataclass(frozen=True)
class Progress:
    """One progress report. Steps count over the whole clip (all segments)."""

    stage: str  # "queued" | "prompt" | "image" | "denoise" | "decode" | "encode" | "done"
    step: int = 0
    total_steps: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None  # None while unknown (before the first step)
    queue_position: int | None = None

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    def message(self) -> str:
        if self.stage == "queued":
            return f"queued (position {self.queue_position})" if self.queue_position else "queued"
        if self.stage != "denoise":
            return self.stage
        eta = f", ETA {self.eta_s:.0f} s" if self.eta_s is not None else ""
        return f"step {self.step}/{self.total_steps}{eta}"


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
