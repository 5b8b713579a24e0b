"""Prompt extension through any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, LM Studio...).

The image travels downscaled as a JPEG data URI. Every failure (timeout, HTTP error, bad JSON,
unusable text) raises BackendFailed with a short reason; the caller falls back.
"""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
from PIL import Image

from wan_demo.core.settings import Settings
from wan_demo.prompt.text import (
    SYSTEM_PROMPT,
    BackendFailed,
    check_output,
    clean_output,
    downscale,
    user_message,
)

MAX_TOKENS = 320  # ~240 words: room for 120 words in either language, bounded cost
MAX_RESPONSE_BYTES = 1_000_000  # a chat answer is a few KB; refuse to parse anything huge
JPEG_QUALITY = 85


def configured(settings: Settings) -> bool:
    return bool(settings.openai_base_url and settings.openai_model)


def image_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    downscale(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def request_body(prompt: str, image: Image.Image, settings: Settings) -> dict:
    user = [
        {"type": "image_url", "image_url": {"url": image_data_uri(image)}},
        {"type": "text", "text": user_message(prompt)},
    ]
    return {
        "model": settings.openai_model,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.3,  # some variety in wording, little invention
    }


def extend_with_openai(prompt: str, image: Image.Image, settings: Settings) -> str:
    if not configured(settings):
        raise BackendFailed("openai_base_url / openai_model not set")
    url = settings.openai_base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {settings.openai_api_key}"} if settings.openai_api_key else {}
    try:
        status, body = post_json(
            url, request_body(prompt, image, settings), headers, settings.prompt_timeout_s
        )
    except httpx.TimeoutException:
        raise BackendFailed(f"timeout after {settings.prompt_timeout_s:g} s") from None
    except httpx.HTTPError as e:
        raise BackendFailed(f"request failed: {type(e).__name__}: {e}") from None
    if status != 200:
        raise BackendFailed(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
    return check_output(prompt, clean_output(answer_text(body)))


def post_json(url: str, body: dict, headers: dict, timeout_s: float) -> tuple[int, bytes]:
    """POST `body`; return (status, response bytes). `timeout_s` bounds the whole exchange, not
    just each read, so a server trickling bytes cannot stall the generation."""
    deadline = time.monotonic() + timeout_s
    chunks, size = [], 0
    with httpx.stream("POST", url, json=body, headers=headers, timeout=timeout_s) as response:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise BackendFailed(f"response larger than {MAX_RESPONSE_BYTES} bytes")
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("total time exceeded")
            chunks.append(chunk)
        return response.status_code, b"".join(chunks)


def answer_text(body: bytes) -> str:
    """The assistant's text from a chat-completions response; content may be a string or parts."""
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise BackendFailed(f"bad JSON response: {type(e).__name__}: {e}") from None
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise BackendFailed(f"bad JSON response: content is {type(content).__name__}")
    return content
