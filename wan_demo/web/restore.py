"""Settings read back into the form: from a history item, or from any MP4 this app made.

Every MP4 carries its settings as JSON (media.video.metadata_of, in the `comment` tag) and a
sidecar beside it holds the same JSON. Restoring gives what makes the same video again: the prompt,
the seed used, the length, and the speed mode, steps and guidance that actually ran (not "auto").
Uploaded files are untrusted: what comes out of them passes the same field checks as a request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_demo.core.controls import MAX_LORAS, without_ignored
from wan_demo.core.loras import SHA256_RE, check_scale
from wan_demo.core.plan import DEFAULT_NEGATIVE_PROMPT, SEGMENT_SECONDS
from wan_demo.core.request import GenerationRequest, InvalidRequest
from wan_demo.core.settings import MAX_PROMPT_CHARS
from wan_demo.core.validate import check_fields, check_text
from wan_demo.jobs.common import Job, Status
from wan_demo.media.video import NoMetadata, read_mp4_metadata

NO_SETTINGS = "no settings found in this file"
FINAL_PROMPT_CHARS = 4 * MAX_PROMPT_CHARS  # an extended prompt is longer than what the user typed
AUTO = "auto"


class NoSettings(ValueError):
    """Nothing to restore; the message is shown on the page as it is."""


@dataclass(frozen=True)
class Restored:
    """Form values, in the form's terms: 0 steps / 0 guidance / "auto" mean the mode's defaults."""

    prompt: str
    final_prompt: str
    prompt_extend: bool
    seed: int
    video_length: str  # "5" | "10", as the radio holds it
    negative_prompt: str  # "" = the default list
    steps: int
    guidance: float
    speed_mode: str  # "auto" | "quality" | "fast"
    prompt_2: str = ""  # the second 5 s of a 10 s clip; "" = the same prompt
    # issue 24: the end frame's picture (a history item's stored one; an MP4 does not carry it: None),
    # NAG's numbers (0 = unset) and the interpolation checkbox
    last_image: Any = None
    nag_scale: float = 0.0
    nag_tau: float = 0.0
    nag_alpha: float = 0.0
    interpolate: bool = False
    loras: tuple[tuple[str, str, float], ...] = ()  # (sha256, name, scale): web/lora_panel.py shows them

    def form(self, fast_available: bool) -> tuple[Any, ...]:
        """prompt, prompt_extend, seed, video_length, negative_prompt, steps, guidance, speed_mode,
        prompt_2, last_image, nag_scale, nag_tau, nag_alpha, interpolate (the /generate inputs after
        the image), then the final prompt."""
        mode = self.speed_mode if fast_available or self.speed_mode != "fast" else AUTO
        return (
            self.prompt, self.prompt_extend, self.seed, self.video_length, self.negative_prompt,
            self.steps, self.guidance, mode, self.prompt_2, self.last_image, self.nag_scale, self.nag_tau,
            self.nag_alpha, self.interpolate, self.final_prompt,
        )  # fmt: skip

    def summary(self) -> str:
        steps = f"{self.steps} steps" if self.steps else "default steps"
        return f"seed {self.seed}, {self.video_length} s, {self.speed_mode} mode, {steps}"


def from_metadata(meta: Any) -> Restored:
    """Our settings JSON (the MP4 tag or the sidecar) -> form values. Raises NoSettings."""
    settings = meta.get("settings") if isinstance(meta, dict) else None
    if not isinstance(settings, dict) or "prompt" not in meta or "seed" not in meta:
        raise NoSettings(NO_SETTINGS)
    negative = settings.get("negative_prompt")
    info = meta.get("prompt_info")
    nag = settings.get("nag") if isinstance(settings.get("nag"), dict) else {}
    interpolation = settings.get("interpolation") if isinstance(settings.get("interpolation"), dict) else {}
    ran = without_ignored({
        "negative_prompt": None if negative in (None, "", DEFAULT_NEGATIVE_PROMPT) else negative,
        "guidance": settings.get("guidance"), "speed_mode": settings.get("speed_mode"),
        **{f"nag_{k}": nag.get(k) for k in ("scale", "tau", "alpha")},
    })  # fmt: skip
    return _checked(
        GenerationRequest(
            None, meta["prompt"], _length_of(meta, settings), meta["seed"],
            isinstance(info, dict) and info.get("backend", "off") != "off",
            ran["negative_prompt"], settings.get("steps"), ran["guidance"], ran["speed_mode"],
            settings.get("prompt_2"), nag_scale=ran["nag_scale"], nag_tau=ran["nag_tau"],
            nag_alpha=ran["nag_alpha"], interpolate=interpolation.get("factor"),
        ),
        meta.get("final_prompt"),
        settings.get("loras"),
    )  # fmt: skip


def from_job(job: Job, read: Callable[[str], bytes] = lambda loc: Path(loc).read_bytes()) -> Restored:
    """A history item -> form values: its sidecar (what actually ran; `read` fetches it from the job's
    storage) once it succeeded and the sidecar still exists, else the request as it was asked with
    the seed used when known."""
    if job.status == Status.SUCCESS and job.metadata_path:
        try:
            return from_metadata(json.loads(read(job.metadata_path).decode("utf-8")))
        except (NoSettings, ValueError, OSError):
            pass  # expired or unreadable: the request params below still hold
    p = job.params
    seed = job.seed_used if job.seed_used is not None else p.get("seed", -1)
    names = ("negative_prompt", "guidance", "speed_mode", "nag_scale", "nag_tau", "nag_alpha")
    asked = without_ignored({k: p.get(k) for k in names})  # old rows
    raw = GenerationRequest(
        None, p.get("prompt", ""), p.get("video_length_s", 5), seed, bool(p.get("prompt_extend")),
        asked["negative_prompt"], p.get("steps"), asked["guidance"], asked["speed_mode"], p.get("prompt_2"),
        nag_scale=asked["nag_scale"], nag_tau=asked["nag_tau"], nag_alpha=asked["nag_alpha"],
        interpolate=p.get("interpolate"),
    )  # fmt: skip
    return _checked(raw, job.final_prompt, p.get("loras"))


def from_file(path: str | Path, max_bytes: int) -> Restored:
    """An uploaded MP4 -> form values. Raises NoSettings with "no settings found in this file"."""
    try:
        return from_metadata(read_mp4_metadata(Path(path), max_bytes))
    except NoMetadata:
        raise NoSettings(NO_SETTINGS) from None


def _length_of(meta: dict, settings: dict) -> Any:
    segments = settings.get("segments")
    if isinstance(segments, int) and not isinstance(segments, bool):
        return segments * SEGMENT_SECONDS
    frames = meta.get("num_frames")
    return (frames - 1) // 80 * SEGMENT_SECONDS if isinstance(frames, int) else None


def _checked(raw: GenerationRequest, final_prompt: Any, loras: Any = None) -> Restored:
    """The one field check of every request; anything out of range means nothing to restore."""
    try:
        fields = check_fields(raw)
        final = check_text("final_prompt", final_prompt or fields["prompt"], FINAL_PROMPT_CHARS, False)
        ran = _loras(loras)
    except InvalidRequest as e:
        raise NoSettings(f"{NO_SETTINGS} (the stored {e.field} is not valid)") from None
    return Restored(
        prompt=fields["prompt"],
        final_prompt=final,
        prompt_extend=fields["prompt_extend"],
        seed=fields["seed"],
        video_length=str(fields["video_length_s"]),
        negative_prompt=fields["negative_prompt"] or "",
        steps=fields["steps"] or 0,
        guidance=fields["guidance"] or 0.0,
        speed_mode=fields["speed_mode"] or AUTO,
        prompt_2=fields.get("prompt_2") or "",
        nag_scale=fields["nag_scale"] or 0.0,
        nag_tau=fields["nag_tau"] or 0.0,
        nag_alpha=fields["nag_alpha"] or 0.0,
        interpolate=fields["interpolate"] == 2,
        loras=ran,
    )


def _loras(value: Any) -> tuple[tuple[str, str, float], ...]:
    """(sha256, name, scale) of each LoRA that ran, from untrusted metadata: the request's checks."""
    if not value:
        return ()
    if not isinstance(value, list) or len(value) > MAX_LORAS or not all(isinstance(v, dict) for v in value):
        raise InvalidRequest("loras", f"must be a list of at most {MAX_LORAS} entries")
    out = []
    for i, lora in enumerate(value):
        sha = lora.get("sha256")
        if not isinstance(sha, str) or not SHA256_RE.match(f"sha256:{sha}"):
            raise InvalidRequest(f"loras[{i}]", "has no valid sha256")
        name = check_text(f"loras[{i}]", lora.get("name") or sha[:12], 200, required=True)
        out.append((sha, name, check_scale(f"loras[{i}]", lora.get("scale"))))
    return tuple(out)
