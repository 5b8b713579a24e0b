"""Storage keys, content types and durable local writes, shared by the storage backends."""

from __future__ import annotations

import os
import re
from pathlib import Path

KEY_RULE = re.compile(r"^(inputs|outputs)(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){1,3}$")  # no "..", no "//"
CONTENT_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def check_key(key: str) -> str:
    if not KEY_RULE.match(key) or ".." in key:
        raise ValueError(f"bad storage key {key[:80]!r}: inputs/... or outputs/... with plain names")
    return key


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")


def write_durably(path: Path, data: bytes) -> None:
    """Write to a temp name, fsync, rename: the file is whole or absent, and survives a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
