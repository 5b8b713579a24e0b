"""Prompt stage: prompt extension (the default negative prompt is part of the run plan, core.plan).

extend_prompt() tries the configured backends in order (OpenAI-compatible endpoint, local VLM,
offline rules) and falls back to the user's prompt; it never raises and says in `info` which
backend produced the final prompt and why earlier ones were skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from wan_demo.core.settings import Settings
from wan_demo.prompt import openai_backend as prompt_openai
from wan_demo.prompt import rules as prompt_rules
from wan_demo.prompt import vlm as prompt_vlm
from wan_demo.prompt.text import BackendFailed


def backends(settings: Settings) -> tuple[list[str], list[dict[str, str]]]:
    """Backends to try in order, and the ones auto mode skipped (with the reason)."""
    choice = settings.prompt_extender
    if choice == "off":
        return [], []
    if choice in ("openai", "local"):
        return [choice, "rules"], []
    if choice == "rules":
        return ["rules"], []
    skipped = []  # auto (Settings refuse any other name at start; a Settings built in code may hold one)
    order = []
    if prompt_openai.configured(settings):
        order.append("openai")
    else:
        skipped.append({"backend": "openai", "error": "openai_base_url / openai_model not set"})
    available, why = prompt_vlm.is_available(settings)
    if available:
        order.append("local")
    else:
        skipped.append({"backend": "local", "error": why})
    return [*order, "rules"], skipped


def _run_openai(prompt: str, image: Image.Image, settings: Settings) -> tuple[str, dict]:
    return prompt_openai.extend_with_openai(prompt, image, settings), {"model": settings.openai_model}


def _run_local(prompt: str, image: Image.Image, settings: Settings) -> tuple[str, dict]:
    text, facts = prompt_vlm.extend_with_vlm(prompt, image, settings)
    return text, {"model": settings.prompt_model, **facts}


def _run_rules(prompt: str, image: Image.Image, settings: Settings) -> tuple[str, dict]:
    return prompt_rules.extend_with_rules(prompt, image), {"note": prompt_rules.NOTE}


RUNNERS: dict[str, Callable[[str, Image.Image, Settings], tuple[str, dict]]] = {
    "openai": _run_openai,
    "local": _run_local,
    "rules": _run_rules,
}


def extend_prompt(prompt: str, image: Image.Image, settings: Settings) -> tuple[str, dict[str, Any]]:
    """Rewrite `prompt` into a detailed video prompt. Never raises; falls back to `prompt`.

    info: backend ("openai" | "local" | "rules" | "none" | "off"), reason, attempts ([{backend,
    error}] of backends that ran and failed), skipped (auto mode: backends not tried, and why),
    seconds, plus facts from the backend that answered.
    """
    started = time.monotonic()
    try:
        order, skipped = backends(settings)
    except Exception as e:  # e.g. a broken huggingface_hub install: still never fail
        order, skipped = ["rules"], [{"backend": "plan", "error": f"{type(e).__name__}: {e}"}]
    if not order:
        return prompt, {"backend": "off", "reason": "prompt_extender is off", "attempts": [], "skipped": []}
    attempts: list[dict[str, str]] = []
    for name in order:
        try:
            text, facts = RUNNERS[name](prompt, image, settings)
        except Exception as e:  # timeouts, HTTP errors, OOM, bad output: try the next backend
            error = str(e) if isinstance(e, BackendFailed) else f"{type(e).__name__}: {e}"
            attempts.append({"backend": name, "error": error[:300]})
            continue
        seconds = round(time.monotonic() - started, 3)
        info = {
            "backend": name,
            "reason": _reason(attempts, skipped),
            "attempts": attempts,
            "skipped": skipped,
        }
        return text, {**info, "seconds": seconds, **facts}
    reason = "every backend failed; using the prompt as written: " + _summary(attempts)
    return prompt, {"backend": "none", "reason": reason, "attempts": attempts, "skipped": skipped}


def _reason(attempts: list[dict[str, str]], skipped: list[dict[str, str]]) -> str:
    if attempts:
        return "fallback after " + _summary(attempts)
    return "auto: skipped " + _summary(skipped) if skipped else "first choice"


def _summary(attempts: list[dict[str, str]]) -> str:
    return "; ".join(f"{a['backend']}: {a['error']}" for a in attempts)
