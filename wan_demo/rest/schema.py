"""Typed shapes of the REST API (they make the OpenAPI schema) and the model description.

Field names follow the hosted provider's contract; fields marked "additive" go beyond it. Types are
checked here (strict: no "5" for 5); value rules live in wan_demo/core/validate.py and are documented in
the schema through json_schema_extra, so one set of messages serves the UI and the API.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wan_demo.core import settings as limits
from wan_demo.core.controls import CONTROLS, NUM_VIDEOS, Control
from wan_demo.core.plan import frames_for
from wan_demo.core.settings import API_MODEL_ID, FPS, MAX_PROMPT_CHARS, SEED_MAX, VIDEO_LENGTHS_S
from wan_demo.jobs.common import WEBHOOK_EVENTS
from wan_demo.rest import lora_schema
from wan_demo.rest.lora_schema import LoraItem

STATUS_DOC = "queued | processing | success | failed | cancelled (the last three never change)"
MAX_WEBHOOK_URL = 2048
WEBHOOK_DOC = (
    "POST the request's JSON (as GET shows it) here on the chosen events, signed per Standard Webhooks "
    "(webhook-id, webhook-timestamp, webhook-signature) with your key's secret; https to a public "
    "address (or an address the server allow-lists). Retried with backoff for up to 24 h."
)


def _limits(c: Control) -> dict[str, Any]:
    """JSON-schema bounds of a control (documentation; core/validate.py enforces them)."""
    if c.choices:
        return {"enum": list(c.choices)}
    if c.kind is str:
        return {"maxLength": int(c.high)}
    low, high = (int(c.low), int(c.high)) if c.kind is int else (c.low, c.high)
    return {"minimum": low, "maximum": high}


def _control(name: str) -> Any:
    """An optional payload field for a control; null = unset (so an enum lists null too)."""
    c = CONTROLS[name]
    limits = {"enum": [*c.choices, None]} if c.choices else _limits(c)
    return Field(None, description=c.help, examples=[c.example], json_schema_extra=limits)


LAST_IMAGE_DOC = (
    "end frame: the clip's last segment ends on this picture. Same forms and rules as "
    "path_input_image (base64 / data URI / https when enabled; JPEG, PNG, WEBP) and the input's "
    "aspect ratio within 2 %"
)
MAX_IMAGE_FIELD_CHARS = 40 * 2**20  # documentation; the body limit (max_file_size_mb) binds first


class SubmitPayload(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    prompt: str = Field(json_schema_extra={"minLength": 1, "maxLength": MAX_PROMPT_CHARS})
    path_input_image: str | None = Field(
        None,
        description="base64 or data URI (JPEG/PNG/WEBP); an https URL when the server allows URL "
        "inputs. Never read as a server path. Required unless parent_request_id is given.",
    )
    video_length: int = Field(5, description="seconds", json_schema_extra={"enum": list(VIDEO_LENGTHS_S)})
    prompt_extend: bool = False
    seed: int = Field(-1, description="-1 = random", json_schema_extra={"minimum": -1, "maximum": SEED_MAX})
    # additive
    prompt_2: str | None = Field(
        None,
        description="prompt of the second 5 s segment (video_length 10); empty = prompt",
        json_schema_extra={"maxLength": MAX_PROMPT_CHARS},
    )
    parent_request_id: str | None = Field(
        None,
        description="extend this request (same key, status success): the outcome is its video followed "
        "by video_length more seconds that start from its last frame; leave path_input_image out",
        json_schema_extra={"maxLength": 64},
    )
    # additive, optional (core/controls.py): unset = the speed mode's default, as before
    negative_prompt: str | None = _control("negative_prompt")
    speed_mode: str | None = _control("speed_mode")
    num_inference_steps: int | None = _control("steps")
    guidance_scale: float | None = _control("guidance")
    flow_shift: float | None = _control("flow_shift")
    fps: int | None = _control("fps")
    # additive, issue 24 (docs/controls.md): end frame, NAG (fast mode), interpolation, batches
    path_last_image: str | None = Field(
        None, description=LAST_IMAGE_DOC, json_schema_extra={"maxLength": MAX_IMAGE_FIELD_CHARS}
    )
    nag_scale: float | None = _control("nag_scale")
    nag_tau: float | None = _control("nag_tau")
    nag_alpha: float | None = _control("nag_alpha")
    interpolate: int | None = _control("interpolate")
    num_videos: int = Field(
        1, description=NUM_VIDEOS.help, examples=[NUM_VIDEOS.example], json_schema_extra=_limits(NUM_VIDEOS)
    )
    loras: list[LoraItem] | None = lora_schema.loras_field()  # additive, issue 23 (docs/loras.md)


class SubmitBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")  # one rule at every level: unknown = 422
    model: str = Field(json_schema_extra={"enum": [API_MODEL_ID]})
    payload: SubmitPayload
    webhook_url: str | None = Field(
        None, description=WEBHOOK_DOC, examples=["https://example.com/hooks/wan"],
        json_schema_extra={"maxLength": MAX_WEBHOOK_URL},
    )  # fmt: skip
    webhook_events: list[str] | None = Field(
        None, description=f"any of {', '.join(WEBHOOK_EVENTS)}; unset = all (needs webhook_url)",
        examples=[["processing", "completed"]],
        json_schema_extra={"items": {"type": "string", "enum": list(WEBHOOK_EVENTS)}, "minItems": 1},
    )  # fmt: skip


class Submitted(BaseModel):
    request_id: str
    model: str
    status: str
    created_at: int  # unix seconds
    updated_at: int
    queued_at: int
    # additive (issue 24): a batch (num_videos > 1) is one request per video
    request_ids: list[str] = Field(
        default_factory=list, description="every request of this submit, in seed order"
    )
    batch_id: str | None = Field(None, description="shared by the requests of a batch; list with ?batch_id=")


class Outcome(BaseModel):
    video_url: str | None = None
    thumbnail_image_url: str | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str
    field: str | None = None
    request_id: str | None = Field(None, description="code internal only: the id the server log also shows")


class WebhookState(BaseModel):
    url: str
    events: list[str]
    last_status: int | None = Field(
        None, description="HTTP status of the latest attempt; null: none yet or no answer"
    )
    last_error: str | None = Field(None, description="why the latest attempt failed; null when it succeeded")
    last_event: str | None = None
    attempts: int = Field(0, description="attempts over all of this request's events")
    next_attempt_at: int | None = Field(
        None, description="unix seconds of the next attempt; null: nothing pending"
    )
    pending: int = 0
    delivered: int = 0
    failed: int = Field(0, description="events given up after 24 h of retries")


class RequestView(BaseModel):
    request_id: str
    org_id: str
    model: str
    status: str = Field(description=STATUS_DOC)
    is_public: bool
    payload: dict[str, Any]
    outcome: Outcome
    qworker_id: str | None
    created_at: int
    updated_at: int
    queued_at: int
    # additive
    started_at: int | None = None
    completed_at: int | None = None
    queue_position: int | None = Field(None, description="1-based among queued requests; 0 = running")
    progress: int = Field(0, description="percent, 0-100")
    error: ErrorInfo | None = None
    final_prompt: str | None = Field(None, description="the prompt actually used (extended or not)")
    seed_used: int | None = None
    eta_s: float | None = Field(None, description="estimated seconds until done (queued or processing)")
    notice: str | None = Field(None, description="e.g. no worker is running: the request waits in the queue")
    preview_url: str | None = Field(
        None, description="live preview (animated WEBP) while processing; needs the same Bearer key"
    )
    webhook: WebhookState | None = Field(None, description="delivery state when the request has a webhook")
    batch_id: str | None = Field(None, description="the batch this request belongs to (num_videos > 1)")


class RequestList(BaseModel):
    requests: list[RequestView]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class ModelIds(BaseModel):
    model_ids: list[str]


class Parameter(BaseModel):
    type: str
    required: bool
    default: Any = None
    constraints: dict[str, Any] = {}
    description: str = ""


class ModelStatus(BaseModel):
    """The serving model's load state (jobs/loading.py): submits queue while it is "loading"."""

    state: str = Field(description='"loading" | "ready" | "failed"')
    stage: str = Field("", description="what the load does now (loading) or what runs the jobs (ready)")
    progress: float = Field(0.0, description="load steps done / load steps, 0..1 (not a time estimate)")
    reason: str = Field("", description="why the load failed (failed)")
    elapsed_s: float = Field(0.0, description="seconds since the load started")


class ModelInfo(BaseModel):
    id: str
    name: str
    task: str
    resolution: str
    width: int
    height: int
    video_lengths: list[int]
    fps: int
    frames: dict[str, int]
    parameters: dict[str, Parameter]
    status: ModelStatus | None = None  # None only where no job service answers (schema tools)


class ErrorBody(BaseModel):
    error: ErrorInfo


def model_info() -> ModelInfo:
    return ModelInfo(
        id=API_MODEL_ID,
        name="Wan2.1 I2V 14B 480P",
        task="image-to-video",
        resolution=f"{limits.NATIVE_WIDTH}x{limits.NATIVE_HEIGHT}",
        width=limits.NATIVE_WIDTH,
        height=limits.NATIVE_HEIGHT,
        video_lengths=list(VIDEO_LENGTHS_S),
        fps=FPS,
        frames={str(s): frames_for(s) for s in VIDEO_LENGTHS_S},
        parameters={
            "prompt": Parameter(type="string", required=True, constraints={"max_length": MAX_PROMPT_CHARS}),
            "path_input_image": Parameter(
                type="string",
                required=False,
                constraints={"formats": ["JPEG", "PNG", "WEBP"]},
                description="base64 / data URI (https URL when enabled); aspect ratio kept in 480*832 px; "
                "required unless parent_request_id is given",
            ),
            "video_length": Parameter(
                type="integer", required=False, default=5, constraints={"enum": [5, 10]}
            ),
            "prompt_extend": Parameter(type="boolean", required=False, default=False),
            "seed": Parameter(
                type="integer", required=False, default=-1, constraints={"min": -1, "max": SEED_MAX}
            ),
            "prompt_2": Parameter(
                type="string",
                required=False,
                constraints={"max_length": MAX_PROMPT_CHARS},
                description="prompt of the second 5 s segment of a 10 s clip",
            ),
            "parent_request_id": Parameter(
                type="string",
                required=False,
                description="extend a successful request of the same key by video_length seconds",
            ),
            **{c.api_name: _parameter(c) for c in CONTROLS.values()},
            "path_last_image": Parameter(
                type="string",
                required=False,
                constraints={"formats": ["JPEG", "PNG", "WEBP"]},
                description=LAST_IMAGE_DOC,
            ),
            "num_videos": _parameter(NUM_VIDEOS).model_copy(update={"default": 1}),
            "loras": Parameter(
                type="array",
                required=False,
                description=lora_schema.PARAMETER_DOC,
                constraints=lora_schema.CONSTRAINTS,
            ),
        },  # fmt: skip
    )


def _parameter(c: Control) -> Parameter:
    kind = {str: "string", int: "integer", float: "number"}[c.kind]
    constraints = {k.replace("imum", "").replace("maxLength", "max_length"): v for k, v in _limits(c).items()}
    return Parameter(type=kind, required=False, constraints=constraints, description=c.help)
