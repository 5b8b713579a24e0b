"""Read a settings dataclass from env vars and flags (the flag wins), by the Specs of its fields.

Every problem is one line naming the flag or the variable, the value and the rule; all of them
are gathered and raised together as SettingsError (exit status 2, a usage error). Secrets are
refused on the command line (every user of the machine can read a process's arguments) and never
repeated in a message. An unknown WAN_DEMO_* variable is a warning naming the nearest setting.
Standard library only: `python app.py --help` must answer before torch or gradio load.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

from wan_demo.core.rules import Spec, convert, has_password, problem, rule_text, spec_of

ENV_PREFIX = "WAN_DEMO_"
HELP_HINT = "python app.py --help lists every setting"
MAX_SECRET_FILE = 1 << 20  # bytes; a key file of ~14,000 sha256 entries, far beyond any real one
log = logging.getLogger("wan_demo.settings")


class SettingsError(SystemExit):
    """Settings that cannot work: exit status 2; str() is the problems, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__(2)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(self.problems)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # unknown flag, missing value: one line, not a 70-flag usage dump
        raise SettingsError([f"{message} ({HELP_HINT})"])


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def shown(value: Any) -> str:
    """A default as --help and the docs print it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return '""' if value == "" else str(value)


def specs(cls: type) -> dict[str, tuple[Any, Spec, Any]]:
    """name -> (type, Spec, default) in field order."""
    hints = get_type_hints(cls)
    return {f.name: (hints[f.name], spec_of(f), f.default) for f in fields(cls)}


def help_line(name: str, spec: Spec, default: Any) -> str:
    """One --help line: meaning, then (unit; rule; default; env var)."""
    if spec.secret == "always":
        alt = f" or {flag_name(spec.file)}" if spec.file else ""
        facts = [t for t in (rule_text(spec), f"secret: env {env_name(name)}{alt}, never this flag") if t]
    else:
        facts = [t for t in (spec.unit, rule_text(spec)) if t]
        facts += [f"default {shown(default)}", f"env {env_name(name)}"]
    return f"{spec.help} ({'; '.join(facts)})".replace("%", "%%")  # argparse formats '%'


def build_parser(
    cls: type, groups: Mapping[str, str], commands: Mapping[str, str] = {}, prog: str = "app.py"
) -> Parser:
    """Flags grouped as `groups` (title -> description); every flag's default is None = not given.
    `commands` (name -> help) are flags that are no setting (--doctor): the caller acts on them."""
    parser = Parser(
        prog=prog,
        allow_abbrev=False,  # --doc is not --doctor: with 70 flags a prefix would change meaning silently
        usage=f"python {prog} [--setting VALUE ...]",
        description="Wan2.1 I2V 480P demo: the Gradio UI, the Gradio API and the REST job API on one "
        f"port. Every flag is also an env var ({ENV_PREFIX}<SETTING>); the flag wins.",
        epilog="Exit status 2: a setting is wrong (one line per problem). docs/settings.md has the table.",
    )
    table = specs(cls)
    for name, about in commands.items():
        parser.add_argument(flag_name(name), action="store_true", help=about)
    sections = {g: parser.add_argument_group(g, d) for g, d in groups.items()}
    for name, (kind, spec, default) in table.items():
        if spec.group not in sections:  # a field declared without opt(): still a flag (tests ask for help)
            sections[spec.group] = parser.add_argument_group(spec.group)
        section = sections[spec.group]
        bool_flag = {"action": argparse.BooleanOptionalAction} if kind is bool else {}
        section.add_argument(
            flag_name(name), dest=name, default=None, help=help_line(name, spec, default), **bool_flag
        )
    return parser


def read(
    cls: type, groups: Mapping[str, str], argv: list[str], environ: Mapping[str, str],
    commands: Mapping[str, str] = {},
) -> Any:  # fmt: skip
    """An instance of `cls` from `environ` then `argv`; SettingsError lists every problem."""
    given = vars(build_parser(cls, groups, commands).parse_args(argv))  # --help prints and exits 0 here
    values: dict[str, Any] = {}
    where: dict[str, str] = {}  # setting -> the flag or variable it came from, for messages
    problems: list[str] = []
    for name, (kind, spec, _) in specs(cls).items():
        raw, from_flag = given.get(name), True
        if raw is None:
            raw, from_flag = environ.get(env_name(name)), False
        if raw is None:
            continue
        where[name] = flag_name(name) if from_flag else env_name(name)
        if isinstance(raw, bool):  # --flag / --no-flag
            values[name] = raw
        elif why := (_take(name, kind, spec, raw, from_flag, values)):
            problems.append(why)
    warn_unknown(environ, set(specs(cls)))
    problems += read_files(cls, values, where)
    if problems:
        raise SettingsError(problems)
    return cls(**values)


def _take(name: str, kind: Any, spec: Spec, raw: str, from_flag: bool, values: dict[str, Any]) -> str:
    """Convert and check one raw value into `values`; the problem in one line, or ''."""
    label = f"{flag_name(name)} {raw!r}" if from_flag else f"{env_name(name)}={raw!r}"
    if spec.secret:  # never repeat a secret, not even a malformed one
        label = flag_name(name) if from_flag else env_name(name)
    if from_flag and (spec.secret == "always" or spec.secret == "password" and has_password(raw)):
        alt = f" or {flag_name(spec.file)} <file>" if spec.file else ""
        return (
            f"{label}: refused: a secret on the command line is visible to every user of this machine "
            f"(ps, /proc/<pid>/cmdline); set {env_name(name)}{alt} instead"
        )
    try:
        value = convert(kind, raw)
    except ValueError as e:
        rule = rule_text(spec)
        return f"{label}: {e}" + (f"; must be {rule}" if rule else "")
    if why := problem(spec, value):
        return f"{label}: {why}"
    values[name] = value
    return ""


def warn_unknown(environ: Mapping[str, str], names: set[str]) -> None:
    """A WAN_DEMO_* variable that is no setting (a typo is otherwise ignored without a word)."""
    known = {env_name(n) for n in names}
    for var in sorted(environ):
        if var.upper().startswith(ENV_PREFIX) and var not in known:
            # compare the part after the prefix, or every name looks alike
            near = difflib.get_close_matches(var.upper()[len(ENV_PREFIX) :].lower(), names, n=1, cutoff=0.6)
            hint = f"did you mean {env_name(near[0])}?" if near else HELP_HINT
            log.warning("%s is not a setting; %s", var, hint)


def read_files(cls: type, values: dict[str, Any], where: dict[str, str]) -> list[str]:
    """Secret files, read once: a *_file's contents become its setting (both set = a problem)."""
    problems = []
    for name, (_, spec, _) in specs(cls).items():
        path = values.get(name)
        if not (spec.file_for or spec.secret_file) or not path:
            continue
        label = f"{where[name]} {str(path)!r}"
        try:
            text = read_small(Path(path))
        except (OSError, ValueError) as e:
            problems.append(f"{label}: {file_error(e)}")
            continue
        warn_if_shared(where[name], Path(path))
        if not spec.file_for:
            continue
        if values.get(spec.file_for):
            problems.append(f"{where[spec.file_for]} and {where[name]} are both set; keep one")
        elif not text:
            problems.append(f"{label}: the file is empty")
        else:
            values[spec.file_for] = text
    return problems


def file_problem(path: Path) -> str | None:
    """Why a secret file cannot be used (a Settings built in code names it), or None."""
    try:
        read_small(path)
    except (OSError, ValueError) as e:
        return file_error(e)
    return None


def file_error(e: OSError | ValueError) -> str:
    if isinstance(e, OSError):
        return f"cannot read it ({e.strerror or e.__class__.__name__})"
    return str(e)


def read_small(path: Path) -> str:
    """A regular file of at most MAX_SECRET_FILE bytes, stripped (never a FIFO or /dev/zero)."""
    if not path.is_file():
        raise ValueError("not a regular file" if path.exists() else "no such file")
    with path.open("rb") as f:
        data = f.read(MAX_SECRET_FILE + 1)
    if len(data) > MAX_SECRET_FILE:
        raise ValueError(f"larger than {MAX_SECRET_FILE // 1024} KB: not a secret file")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None


def warn_if_shared(source: str, path: Path) -> None:
    """A secret file other users can read defeats the point of keeping the secret off the command line."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warning("%s: %s is readable by every user (mode %o); chmod 600 it", source, path, mode & 0o777)
