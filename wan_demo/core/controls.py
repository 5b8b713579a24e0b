"""The optional generation controls, defined once for the UI, the Gradio API, REST and Python.

Each `Control` names its field on GenerationRequest / ValidRequest (also the Gradio API parameter),
its REST payload name, its type and range, its example, and which speed modes ignore it. validate()
checks values against this table, plan_run() refuses values that the resolved speed mode would
ignore (`check_mode`), and rest/schema.py and web/ui.py build their fields from it. Unset (None)
always means "the speed mode's default", so requests that leave them out behave as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from wan_demo.core.choices import SPEED_MODES
from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import FPS, MAX_PROMPT_CHARS

NAG_DEFAULTS = (11.0, 2.5, 0.25)  # scale, tau, alpha: sources at the nag_* controls below
NO_CFG = "the fast mode's distilled model runs without classifier-free guidance"
NAG_CFG = "NAG restores negative guidance where CFG is off; quality mode has CFG, use guidance instead"


@dataclass(frozen=True)
class Control:
    name: str  # GenerationRequest / ValidRequest field and Gradio API parameter
    api_name: str  # REST payload field
    kind: type  # int | float | str
    help: str  # one line for the OpenAPI schema, the model description and the UI
    example: Any
    low: float | None = None  # inclusive range of numbers; for text: max length in `high`
    high: float | None = None
    choices: tuple[str, ...] = ()
    # speed mode -> the only value that mode accepts (None: no value at all); a mode not listed
    # uses the control. A value the mode would ignore is refused, never dropped silently.
    fixed: dict[str, Any] = field(default_factory=dict)
    why: str = NO_CFG  # why the modes in `fixed` ignore it (said in the refusal)


CONTROLS = {
    c.name: c
    for c in (
        Control(
            "negative_prompt",
            "negative_prompt",
            str,
            high=MAX_PROMPT_CHARS,
            help="what to avoid; unset = the default list. Quality mode: through CFG (guidance > 1); "
            "fast mode: through NAG (normalized attention guidance)",
            example="blurry, static frame, watermark",
        ),
        Control(
            "speed_mode",
            "speed_mode",
            str,
            choices=SPEED_MODES,
            help="quality = 40 steps with guidance; fast = step-distilled LoRA, 4 steps, no guidance "
            "(only on servers with the LoRA); unset = the server's default",
            example="quality",
        ),
        Control(
            "steps",
            "num_inference_steps",
            int,
            low=1,
            high=100,
            help="denoising steps per 5 s segment; unset = the mode's (quality 40, fast 4)",
            example=30,
        ),
        Control(
            "guidance",
            "guidance_scale",
            float,
            low=1.0,
            high=20.0,
            fixed={"fast": 1.0},
            help="classifier-free guidance scale (1 = off); unset = the mode's (quality 5, fast 1)",
            example=5.0,
        ),
        Control(
            "flow_shift",
            "flow_shift",
            float,
            low=1.0,
            high=20.0,
            help="flow-matching shift of the scheduler; unset = the mode's (quality 3, fast 5)",
            example=3.0,
        ),
        Control(
            "fps",
            "fps",
            int,
            low=4,
            high=60,
            help=f"output frame rate; a 5 s segment stays 81 frames, so other rates change the clip's "
            f"duration; unset = {FPS}",
            example=FPS,
        ),
        # Issue 24: end frame (a picture, validate.check_last_image), NAG, frame interpolation.
        # NAG defaults (nag.py applies them): scale 11, tau 2.5, alpha 0.25 = the Wan2.1 settings of
        # the NAG paper's reference code (Chen et al. 2025, arXiv 2505.21179) and the defaults of
        # kijai's WanVideoApplyNAG (ComfyUI-WanVideoWrapper); ComfyUI's own NAG node and Wan2GP take
        # the same three numbers.
        Control(
            "nag_scale",
            "nag_scale",
            float,
            low=1.0,
            high=30.0,
            fixed={"quality": None},
            why=NAG_CFG,
            help=f"NAG strength in fast mode (1 = none); unset = {NAG_DEFAULTS[0]:g} when NAG runs "
            "(a negative prompt or any nag_* field in fast mode)",
            example=NAG_DEFAULTS[0],
        ),
        Control(
            "nag_tau",
            "nag_tau",
            float,
            low=1.0,
            high=10.0,
            fixed={"quality": None},
            why=NAG_CFG,
            help=f"NAG: cap on the guided/positive attention norm ratio; unset = {NAG_DEFAULTS[1]:g}",
            example=NAG_DEFAULTS[1],
        ),
        Control(
            "nag_alpha",
            "nag_alpha",
            float,
            low=0.0,
            high=1.0,
            fixed={"quality": None},
            why=NAG_CFG,
            help=f"NAG: share of the guided attention blended in; unset = {NAG_DEFAULTS[2]:g}",
            example=NAG_DEFAULTS[2],
        ),
        Control(
            "interpolate",
            "interpolate",
            int,
            low=1,
            high=2,
            help="frame interpolation factor: 2 = twice the frames at twice the fps, same duration "
            "(16 -> 32 fps); unset or 1 = off",
            example=2,
        ),
    )  # fmt: skip
}
NAG_FIELDS = ("nag_scale", "nag_tau", "nag_alpha")
BY_API_NAME = {c.api_name: c for c in CONTROLS.values()}
# A batch (REST, Gradio API, UI): this many jobs under one submit, seeds seed, seed+1, ... Not a
# generation control (each job is one video), so not in CONTROLS; same Control shape for docs.
NUM_VIDEOS = Control(
    "num_videos", "num_videos", int, low=1, high=4, example=3,
    help="videos in one submit (1-4): seeds seed, seed+1, ... (random each with seed -1)",
)  # fmt: skip


def api_field(name: str) -> str:
    """The REST payload name of a request field (num_inference_steps for steps); others unchanged."""
    return CONTROLS[name].api_name if name in CONTROLS else name


def short_repr(value: Any, limit: int = 40) -> str:
    """`value` for a message: its repr, cut to `limit`; a huge integer by its size (Python refuses to
    print integers over 4300 digits, and a JSON integer can be that long)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_control(name: str, value: Any) -> Any:
    """`value` normalised for control `name` (None stays None), or InvalidRequest naming the rule."""
    c = NUM_VIDEOS if name == NUM_VIDEOS.name else CONTROLS[name]
    if value is None:
        return None
    if c.kind is str:
        if not isinstance(value, str):
            raise InvalidRequest(name, f"must be a string, got {type(value).__name__}")
        if c.choices and value not in c.choices:
            raise InvalidRequest(name, f"{short_repr(value)} is unknown; use one of {', '.join(c.choices)}")
        return value  # free text is checked by validate.check_text (length, NUL, surrogates)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(name, f"must be a number, got {short_repr(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(name, f"must be a finite number, got {value}")
    if c.kind is int and isinstance(value, float) and not value.is_integer():
        raise InvalidRequest(name, f"must be a whole number, got {short_repr(value)}")
    # Bounded before any conversion: comparing an int with a float is exact in Python at any size,
    # while float() of an integer of 2**1024 or more raises OverflowError (JSON allows 10**400).
    if not c.low <= value <= c.high:
        low, high = (int(c.low), int(c.high)) if c.kind is int else (c.low, c.high)
        raise InvalidRequest(name, f"{short_repr(value)} is out of range {low}..{high}")
    return c.kind(value)


def check_mode(values: dict[str, Any], mode: str | None, guidance: float | None) -> None:
    """Refuse values that `mode` would ignore. `values`: request fields by name (None = unset);
    `mode` and `guidance`: what the run will use (None while not known yet: the server's default)."""
    for c in CONTROLS.values():
        value = values.get(c.name)
        if value is None or mode not in c.fixed:
            continue
        allowed = c.fixed[mode]
        if allowed is None or value != allowed:
            keep = "leave it unset" + ("" if allowed is None else f" or {allowed:g}")
            raise InvalidRequest(c.name, f"{short_repr(value)} is ignored in {mode} mode ({c.why}); {keep}")
    no_cfg = guidance is not None and guidance <= 1.0 and mode != "fast"  # fast: NAG uses it
    if values.get("negative_prompt") is not None and no_cfg:
        raise InvalidRequest(
            "negative_prompt",
            "is ignored without guidance (guidance 1 or less); raise it or leave this unset",
        )


def nag_wanted(values: dict[str, Any], mode: str) -> bool:
    """NAG runs in fast mode when the request gives a negative prompt or any nag_* field."""
    return mode == "fast" and any(values.get(n) is not None for n in ("negative_prompt", *NAG_FIELDS))


def without_ignored(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (request fields by name) with what their speed mode and guidance ignore unset: the
    record of a run (which states the mode's fixed values, or was made before check_mode existed)
    restored into a form that check_mode accepts and that runs the same."""
    out, mode = dict(values), values.get("speed_mode")
    for c in CONTROLS.values():
        if mode in c.fixed:
            out[c.name] = None  # the mode fixes it: unset gives the same run
    guidance = out.get("guidance")
    if isinstance(guidance, (int, float)) and guidance <= 1.0 and mode != "fast":
        out["negative_prompt"] = None  # no CFG: the negative prompt did nothing
    return out


# --- community LoRAs (a list per request: core/loras.py checks it; model/loras.py applies it) -----
MAX_LORAS = 4  # per request, stacked beside the fast LoRA in fast mode (hosted APIs take 3)
LORA_SCALE = Control(
    "lora_scale", "scale", float, low=-4.0, high=4.0,
    help="weight of one LoRA: 1 = as trained, 0 = off, negative = the opposite effect",
    example=1.0,
)  # fmt: skip
LORA_SCALE_DEFAULT = 1.0  # a LoRA given without a scale
