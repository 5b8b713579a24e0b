"""Typed shapes of the REST API (they make the OpenAPI schema) and the model description.

Field names follow the hosted provider's contract; fields marked "additive" go beyond it. Types are
checked here (strict: no "5" for 5); value rules live in wan_demo/core/validate.py and are documented in
the schema through json_schema_extra, so one set of messages serves the UI and the API.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wan_demo.core.plan import frames_for
from wan_demo.core.settings import (
    API_MODEL_ID,
    FPS,
    MAX_PROMPT_CHARS,
    NATIVE_HEIGHT,
    NATIVE_WIDTH,
    SEED_MAX,
    VIDEO_LENGTHS_S,
)

STATUS_DOC = "queued | processing | success | failed | cancelled (the last three never change)"


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


class SubmitBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")  # one rule at every level: unknown = 422
    model: str = Field(json_schema_extra={"enum": [API_MODEL_ID]})
    payload: SubmitPayload


class Submitted(BaseModel):
    request_id: str
    model: str
    status: str
    created_at: int  # unix seconds
    updated_at: int
    queued_at: int


class Outcome(BaseModel):
    video_url: str | None = None
    thumbnail_image_url: str | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str
    field: str | None = None
    request_id: str | None = Field(None, description="code internal only: the id the server log also shows")


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


class ErrorBody(BaseModel):
    error: ErrorInfo


def model_info() -> ModelInfo:
    return ModelInfo(
        id=API_MODEL_ID,
        name="Wan2.1 I2V 14B 480P",
        task="image-to-video",
        resolution=f"{NATIVE_WIDTH}x{NATIVE_HEIGHT}",
        width=NATIVE_WIDTH,
        height=NATIVE_HEIGHT,
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
        },
    )
