"""Job records <-> stored rows, for any store backend.

Reading never raises: a row that cannot be read as written (text that is not UTF-8, JSON that does
not parse, an unknown status) becomes a Job with `damage` saying why, so one bad row never breaks a
listing, a lookup or a cancel of anything else. Writing never stores text that UTF-8 cannot encode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from wan_demo.core.validate import encodable, is_encodable
from wan_demo.jobs.common import COLUMNS, JSON_COLUMNS, Job, Status


def read_text(raw: bytes) -> str:
    """SQLite text factory: invalid UTF-8 bytes survive as lone surrogates (then seen as damage)."""
    return raw.decode("utf-8", "surrogateescape")


def job_from_row(row: Mapping[str, Any]) -> Job:
    values = {name: row[name] for name in COLUMNS if name in row.keys()}
    damage: list[str] = []
    for name in JSON_COLUMNS:
        raw = values.get(name)
        try:  # SQLite keeps JSON as text; psycopg hands PostgreSQL's jsonb over decoded
            parsed = raw if isinstance(raw, dict) else json.loads(raw or "{}")
        except (TypeError, ValueError):
            parsed = None
        if not isinstance(parsed, dict):
            damage.append(f"{name} is not a JSON object")
            parsed = {}
        values[name] = parsed
    values["status"] = status_of(values.get("status"))
    if values["status"] is None:
        damage.append(f"unknown status {encodable(str(row['status']))[:40]!r}")
        values["status"] = Status.FAILED  # shown as finished; never claimed, never cancellable
    values["cancel_requested"] = bool(values.get("cancel_requested"))
    bad_text = [name for name, value in values.items() if not _encodable_value(value)]
    if bad_text:
        damage.append(f"text that is not valid UTF-8 in {', '.join(bad_text)}")
    return Job(**values, damage="; ".join(damage) or None)


def status_of(value: Any) -> Status | None:
    try:
        return Status(value)
    except ValueError:
        return None


def row_values(job: Job) -> dict[str, Any]:
    """The job's columns as the store writes them: JSON columns serialised, text made encodable."""
    values = {name: getattr(job, name) for name in COLUMNS}
    for name in JSON_COLUMNS:
        values[name] = json_text(values[name])
    return {name: clean(value) for name, value in values.items()}


def json_text(value: Any) -> str:
    return encodable(json.dumps(value, ensure_ascii=False))


def clean(value: Any) -> Any:
    """Text with lone surrogates replaced (U+FFFD); other values unchanged."""
    return encodable(value) if isinstance(value, str) else value


def _encodable_value(value: Any) -> bool:
    if isinstance(value, str):
        return is_encodable(value)
    if isinstance(value, dict):
        return all(_encodable_value(k) and _encodable_value(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_encodable_value(v) for v in value)
    return True


def clean_deep(value: Any) -> Any:
    """`clean` through dicts and lists (a payload echo, progress info)."""
    if isinstance(value, dict):
        return {clean(k): clean_deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_deep(v) for v in value]
    return clean(value)
