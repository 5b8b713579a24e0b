"""The request and result types shared by the Gradio UI, the Gradio API, the REST API and Python.

An edge builds a `GenerationRequest` from what the user sent, `validate()` turns it into a
`ValidRequest` once, and only that type goes further (job store, worker, generate()).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
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
    prompt_2: Any = None  # prompt of the second 5 s segment (10 s clips); None or "" = `prompt`
    parent: Any = None  # a ParentClip to continue (extend); `image` is then its last frame
    flow_shift: Any = None  # scheduler flow shift; None = the speed mode's
    fps: Any = None  # output frame rate; None = Settings.fps (16, the training rate)
    # issue 24 (core/controls.py): end frame, NAG (fast mode), frame interpolation
    last_image: Any = None  # decoded end-frame still (the last segment ends on it); None = none
    nag_scale: Any = None
    nag_tau: Any = None
    nag_alpha: Any = None
    interpolate: Any = None  # 2 = twice the frames at twice the fps; None or 1 = off
    # community LoRAs: up to 4 of {"path": library name | owner/repo/file.safetensors | https URL |
    # sha256:<hex>, "scale": weight} (or LoraChoice / (path, scale)); None = none (core/loras.py)
    loras: Any = None


@dataclass(frozen=True)
class LoraChoice:
    """One community LoRA of a request. `source` as asked; the rest is filled when the file is found
    and checked (model/lora_library.py resolve): then `sha256` names the exact file that runs."""

    source: str  # library name, owner/repo/path.safetensors (hub), https URL, or sha256:<hex> (cached)
    scale: float = 1.0
    name: str = ""  # file name shown in the UI and metadata
    sha256: str = ""  # hex digest of the file; "" until resolved
    layout: str = ""  # trainer key layout it was recognised as ("wan", "musubi", "diffusers", ...)

    def params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ParentClip:
    """A finished video to continue, in our own format: H.264 yuv420p at the planned size, 16 fps.

    Made by an edge from one of our results (by request id) or from an uploaded MP4 re-encoded to
    that format (media.clip). Its frames are copied into the joined video unchanged (no re-encode)."""

    path: str  # the MP4 (a job keeps its own copy as its input)
    num_frames: int
    width: int  # multiples of 16, inside the model's pixel budget
    height: int
    fps: int
    source: str  # "result" (ours, by request id) | "upload"
    request_id: str | None = None  # the parent's job, when it is one of ours
    sha256: str = ""  # hex digest of the parent MP4 as continued
    lineage: dict[str, Any] = field(default_factory=dict)  # the parent's own lineage (its metadata)

    def params(self) -> dict[str, Any]:
        """JSON-safe description without the path (the job's input path replaces it on restore)."""
        return {k: v for k, v in asdict(self).items() if k != "path"}


# Fields of ValidRequest stored as JSON with a job (everything but the pixels, the parent clip and
# the LoRAs, which params() writes as a list of dicts when there are any).
PARAM_FIELDS = (
    "prompt", "video_length_s", "seed", "prompt_extend", "negative_prompt", "steps", "guidance", "speed_mode",
    "prompt_2", "flow_shift", "fps", "nag_scale", "nag_tau", "nag_alpha", "interpolate",
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
    prompt_2: str | None = None  # None = the second segment uses `prompt`
    parent: ParentClip | None = None  # extend this clip; `image` is its last frame
    flow_shift: float | None = None
    fps: int | None = None
    last_image: Image.Image | None = None  # upright RGB end frame, the input's aspect ratio
    nag_scale: float | None = None
    nag_tau: float | None = None
    nag_alpha: float | None = None
    interpolate: int | None = None
    loras: tuple[LoraChoice, ...] = ()  # community LoRAs, in the order they are stacked

    def params(self) -> dict[str, Any]:
        """JSON-safe fields (no pixels): stored with a job, shown in metadata and logs.
        `last_image` says whether an end frame was given (the job stores its pixels)."""
        params = {name: getattr(self, name) for name in PARAM_FIELDS} | {
            "last_image": self.last_image is not None
        }
        if self.loras:
            params["loras"] = [lora.params() for lora in self.loras]
        return {**params, "parent": self.parent.params()} if self.parent is not None else params

    @classmethod
    def restore(
        cls,
        params: dict[str, Any],
        image: Image.Image,
        input_path: str = "",
        last_image: Image.Image | None = None,
    ) -> ValidRequest:
        """Rebuild a request that validate() accepted earlier (the job store keeps its params and
        its end frame; an extend job's input file is its parent clip)."""
        parent = ParentClip(path=input_path, **params["parent"]) if params.get("parent") else None
        values = {name: params[name] for name in PARAM_FIELDS if name in params}
        loras = tuple(LoraChoice(**lora) for lora in params.get("loras") or ())
        return cls(image=image, parent=parent, last_image=last_image, loras=loras, **values)


@dataclass(frozen=True)
class Progress:
    """One progress report. Steps count over the whole clip (all segments)."""

    stage: str  # "queued" | "prompt" | "image" | "denoise" | "encode" | "done"
    step: int = 0
    total_steps: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None  # None while unknown
    queue_position: int | None = None
    # Live preview: RGB uint8 frames (F, h, w, 3) at latent resolution, from the denoiser's current
    # clean-image estimate (media.preview); None on most reports. Never stored as JSON.
    preview: Any = field(default=None, compare=False, repr=False)

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
        """JSON-safe fields (the preview pixels are written as a file, not stored here)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "preview"}


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
    lineage: dict[str, Any] = field(default_factory=dict)  # parent, segments and prompts (reproducible)
