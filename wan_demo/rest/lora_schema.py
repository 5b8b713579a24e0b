"""The REST shape of the community LoRAs (additive; docs/loras.md): the payload's `loras` items and
their description in GET /models. Types only: core/loras.py checks the values, model/lora_library.py
the files."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wan_demo.core.controls import LORA_SCALE, LORA_SCALE_DEFAULT, MAX_LORAS
from wan_demo.core.loras import FORMS, MAX_SOURCE_CHARS


class LoraItem(BaseModel):
    """One community LoRA: where its .safetensors file is, and its weight."""

    model_config = ConfigDict(strict=True, extra="forbid")
    path: str = Field(
        description=f"{FORMS}; https URLs when the server allows URL inputs",
        examples=["orbit_shot.safetensors"], json_schema_extra={"maxLength": MAX_SOURCE_CHARS},
    )  # fmt: skip
    scale: float = Field(
        LORA_SCALE_DEFAULT, description=LORA_SCALE.help,
        json_schema_extra={"minimum": LORA_SCALE.low, "maximum": LORA_SCALE.high},
    )  # fmt: skip


def loras_field() -> Any:
    """SubmitPayload.loras: null or up to MAX_LORAS items."""
    return Field(
        None, description=f"up to {MAX_LORAS} community LoRAs, stacked in order (beside the fast LoRA in "
        "fast mode); echoed with the name and sha256 of the file that ran",
        json_schema_extra={"maxItems": MAX_LORAS},
    )  # fmt: skip


# GET /models: the `loras` parameter's description and constraints
PARAMETER_DOC = f"[{{path, scale}}]: path is {FORMS}"
CONSTRAINTS = {"max_items": MAX_LORAS, "scale_min": LORA_SCALE.low, "scale_max": LORA_SCALE.high}
