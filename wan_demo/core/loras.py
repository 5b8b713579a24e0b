"""The community-LoRA part of a request: up to MAX_LORAS entries, each a source and a scale.

A source names where the .safetensors file comes from, checked here by its form only (no I/O);
model/lora_library.py finds and checks the file itself:
- a library name: a file in Settings.lora_dir (`orbit_shot.safetensors`, or without the suffix);
- a hub file: `owner/repo/path/in/repo.safetensors`;
- an https URL (REST only, behind the URL-input rules of rest/inputs.py);
- `sha256:<64 hex>`: a file this server already holds (an upload, or one fetched earlier).
Only safetensors: names of pickle checkpoints (.ckpt, .pt, .pth, .bin) are refused by name too.
"""

from __future__ import annotations

import re
from typing import Any

from wan_demo.core.controls import LORA_SCALE, LORA_SCALE_DEFAULT, MAX_LORAS
from wan_demo.core.request import InvalidRequest, LoraChoice

FIELD = "loras"
SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
MAX_SOURCE_CHARS = 2048  # an URL with a signed query fits
SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[\w][\w .+()\[\]-]{0,199}$")  # a plain file name: no folders, no leading dot
HUB_PART_RE = re.compile(r"^[\w][\w.-]*$")
FORMS = "a library name, owner/repo/file.safetensors on the hub, an https URL or sha256:<hex>"


def source_kind(source: str) -> str:
    """ "library" | "hub" | "url" | "cache" for a well-formed source, else InvalidRequest."""
    if source.lower().startswith(("https://", "http://")):
        if not source.lower().startswith("https://"):
            raise InvalidRequest(FIELD, f"{_short(source)}: only https URLs are accepted")
        return "url"
    if source.startswith("sha256:"):
        if not SHA256_RE.match(source):
            raise InvalidRequest(
                FIELD, f"{_short(source)}: sha256: must be followed by 64 lower-case hex digits"
            )
        return "cache"
    if source.lower().endswith(PICKLE_SUFFIXES):
        raise InvalidRequest(FIELD, f"{_short(source)}: only .safetensors files are accepted (pickle "
                             "checkpoints can run code when loaded)")  # fmt: skip
    parts = source.split("/")
    if len(parts) == 1 and NAME_RE.match(source) and not source.startswith("."):
        return "library"
    if len(parts) >= 3 and all(HUB_PART_RE.match(p) and p not in (".", "..") for p in parts):
        if not source.endswith(SUFFIX):
            raise InvalidRequest(FIELD, f"{_short(source)}: a hub file must be a {SUFFIX} file")
        return "hub"
    raise InvalidRequest(FIELD, f"{_short(source)} is not {FORMS}")


def check_loras(value: Any) -> tuple[LoraChoice, ...]:
    """The request's LoRAs, each source well-formed and each scale in range; at most MAX_LORAS and
    no source twice. Accepts a list of {"path", "scale"} dicts, (path, scale) pairs, plain paths or
    LoraChoice; None or an empty list = none."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest(FIELD, f"must be a list of {{path, scale}}, got {type(value).__name__}")
    if len(value) > MAX_LORAS:
        raise InvalidRequest(FIELD, f"{len(value)} LoRAs given; the limit is {MAX_LORAS} per request")
    out = tuple(_one(i, item) for i, item in enumerate(value))
    sources = [c.source for c in out]
    for i, source in enumerate(sources):
        if source in sources[:i]:
            raise InvalidRequest(f"{FIELD}[{i}]", f"{_short(source)} is listed twice; give it once with "
                                 "the scale you want")  # fmt: skip
    return out


def _one(index: int, item: Any) -> LoraChoice:
    field = f"{FIELD}[{index}]"
    if isinstance(item, LoraChoice):
        source, scale, known = item.source, item.scale, item
    elif isinstance(item, dict):
        unknown = sorted(set(item) - {"path", "scale"})
        if unknown:
            raise InvalidRequest(field, f"unknown key {unknown[0]!r}; give path and scale")
        source, scale, known = item.get("path"), item.get("scale", LORA_SCALE_DEFAULT), None
    elif isinstance(item, (list, tuple)) and len(item) == 2:
        (source, scale), known = item, None
    else:
        source, scale, known = item, LORA_SCALE_DEFAULT, None
    if not isinstance(source, str) or not source.strip():
        raise InvalidRequest(field, f"path must be {FORMS}")
    source = source.strip()
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidRequest(field, f"path is {len(source)} characters; the limit is {MAX_SOURCE_CHARS}")
    if "\x00" in source or not source.isprintable():
        raise InvalidRequest(field, "path must be printable text")
    try:
        source_kind(source)
    except InvalidRequest as e:
        raise InvalidRequest(field, e.rule) from None
    scale = check_scale(field, LORA_SCALE_DEFAULT if scale is None else scale)
    if known is not None:  # a resolved choice (restored from a job) keeps what was found
        return LoraChoice(source, scale, known.name, known.sha256, known.layout)
    return LoraChoice(source, scale)


def check_scale(field: str, scale: Any) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale != scale:
        raise InvalidRequest(field, f"scale must be a number, got {_short(scale)}")
    if not LORA_SCALE.low <= scale <= LORA_SCALE.high:
        raise InvalidRequest(field, f"scale {scale} is out of range {LORA_SCALE.low}..{LORA_SCALE.high}")
    return float(scale)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
