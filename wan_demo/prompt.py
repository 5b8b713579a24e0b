"""Prompt stage: the default negative prompt and prompt extension.

Placeholder for the prompt-extension issue: backends (local VLM, OpenAI-compatible, rules) land here.
The contract stays: extend_prompt never raises and says in `info` what produced the final prompt.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from wan_demo.settings import Settings

# Our own list of failure modes to steer away from (used when the user gives no negative prompt):
# quality defects, frozen or jittery motion, and artefacts typical of image-to-video models.
DEFAULT_NEGATIVE_PROMPT = (
    "low quality, worst quality, blurry, out of focus, overexposed, underexposed, washed-out colours, "
    "jpeg artifacts, noise, grain, watermark, logo, text overlay, subtitles, static frame, frozen "
    "image, still picture, flicker, jitter, camera shake, sudden cuts, distorted face, deformed "
    "hands, extra fingers, extra limbs, malformed body, melting objects, morphing background, "
    "duplicated subjects, cluttered background, walking backwards"
)


def extend_prompt(prompt: str, image: Image.Image, settings: Settings) -> tuple[str, dict[str, Any]]:
    """Rewrite `prompt` into a detailed video prompt. Never raises; falls back to `prompt`."""
    return prompt, {"backend": "none", "reason": "prompt extension backends not configured"}
