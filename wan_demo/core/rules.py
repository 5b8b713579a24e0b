"""What one setting is (help, group, unit, choices, range, secrecy) and the rules that turn the text of
a flag or an env var into its value, or into one line saying which rule it breaks.

A Settings field is declared with `opt(GROUP, default, unit=..., low=..., help="...")`: the help,
the --help layout, docs/settings.md and the checks all read this one Spec.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import Field, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

SPEC = "wan_demo.spec"  # key of the Spec in a dataclass field's metadata
Check = Callable[[Any], "str | None"]  # an extra rule: the problem in words, or None when the value is fine


@dataclass(frozen=True)
class Spec:
    group: str  # --help section and docs/settings.md heading (settings.GROUPS)
    help: str  # one line: what the setting does, what 0 / empty means
    unit: str = ""  # of a number: seconds, hours, GB, MB, pixels, ... (required for numbers)
    choices: tuple[str, ...] = ()  # an enumerated setting's names; anything else is refused
    low: float | None = None  # inclusive range of a number
    high: float | None = None
    above: float | None = None  # exclusive lower bound (timeouts: > 0)
    check: Check | None = None  # one more rule (URL scheme, networks, length); choices still pass
    rule: str = ""  # that rule in words, for --help and the docs
    secret: str = ""  # "always" | "password" (a URL's password): refused on the command line
    file: str = ""  # a secret's other source: the *_file setting naming a file that holds it
    file_for: str = ""  # a *_file setting: its contents become that (secret) setting at start-up
    secret_file: bool = False  # a file of secrets its reader parses (checked readable at start-up)


def opt(group: str, default: Any, *, help: str, **rules: Any) -> Any:
    """A Settings field with its Spec; secrets stay out of repr() (and so out of any log line)."""
    spec = Spec(group, help, **rules)
    return field(default=default, metadata={SPEC: spec}, repr=not spec.secret)


def spec_of(f: Field) -> Spec:
    """A field's Spec; a field added without opt() still parses (tests/test_cli.py asks for one)."""
    return f.metadata.get(SPEC) or Spec("other", "")


def rule_text(spec: Spec) -> str:
    """The values a setting accepts, in words ('' when any text goes)."""
    if spec.choices:
        text = "one of " + ", ".join(spec.choices)
        return f"{text}, {spec.rule}" if spec.rule else text
    if spec.low is not None and spec.high is not None:
        text = f"{_num(spec.low)}..{_num(spec.high)}"
    elif spec.low is not None:
        text = f">= {_num(spec.low)}"
    elif spec.above is not None:
        text = f"> {_num(spec.above)}"
    else:
        text = ""
    return "; ".join(t for t in (text, spec.rule) if t)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# --- text -> value --------------------------------------------------------------------------------
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def convert(kind: Any, raw: str) -> Any:
    """The text of a flag or env var as a value of `kind`; ValueError says what it is not."""
    if kind is bool:
        if raw.strip().lower() in TRUE:
            return True
        if raw.strip().lower() in FALSE:
            return False
        raise ValueError("not a boolean (true/false, 1/0, yes/no, on/off)")
    if kind is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError("not a whole number") from None
    if kind is float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return value
    return Path(raw) if kind is Path else raw


def problem(spec: Spec, value: Any) -> str | None:
    """The rule `value` breaks, in words, or None. Choices first: a listed name is always fine."""
    if spec.choices and value in spec.choices:
        return None
    if spec.check is not None and (why := spec.check(value)):
        return why
    if spec.choices and spec.check is None:
        return f"not a choice; use one of {', '.join(spec.choices)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    low_ok = spec.low is None or value >= spec.low
    high_ok = spec.high is None or value <= spec.high
    above_ok = spec.above is None or value > spec.above
    return None if low_ok and high_ok and above_ok else f"out of range; must be {rule_text(spec)}"


# --- extra rules (Spec.check) ----------------------------------------------------------------------
def device_index(value: str) -> str | None:
    """auto | cuda | cpu pass as choices; cuda:<index> names one GPU (torch's spelling)."""
    return None if re.fullmatch(r"cuda:\d+", value) else "not a device; use auto, cuda, cpu or cuda:<index>"


def url(*schemes: str) -> Check:
    """Empty, or a URL with one of `schemes` and a host (bucket for s3)."""

    def check(value: str) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme in schemes and parts.netloc:
            return None
        return f"not a {' or '.join(s + '://' for s in schemes)} URL (or empty)"

    return check


def min_chars(n: int) -> Check:
    """Empty, or at least `n` characters (the value itself is never repeated: it may be secret)."""
    return lambda value: None if not value or len(value) >= n else f"shorter than {n} characters"


def networks(value: str) -> str | None:
    try:
        parse_networks(value)
    except ValueError as e:
        return str(e)
    return None


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """'127.0.0.1, 10.0.0.0/8, fd00::/8' -> networks; ValueError names a bad entry."""
    out = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        try:
            out.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return tuple(out)


def has_password(value: str) -> bool:
    """A URL carrying a password: user:pass@host, or libpq's ?password=..."""
    parts = urlsplit(value)
    try:
        in_netloc = parts.password is not None
    except ValueError:
        in_netloc = ":" in parts.netloc.rpartition("@")[0]
    return in_netloc or "password" in parse_qs(parts.query)
