"""The command line explains itself: `python app.py --help` groups every setting with its help, unit,
choices, default and env var; a bad value is one line naming the flag or variable, the value and the
rule (exit status 2) before any heavy import; secrets are refused as flags; a misspelt WAN_DEMO_*
variable is a warning naming the nearest setting; docs/settings.md is generated from the same source.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from wan_demo.core import choices
from wan_demo.core.cli import SettingsError, env_name, flag_name, shown, specs
from wan_demo.core.settings import GROUPS, Settings, from_env, settings_problems

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "gradio", "diffusers", "transformers", "numpy", "fastapi")
TABLE = specs(Settings)
ENUMERATED = [name for name, (_, spec, _) in TABLE.items() if spec.choices]


def run_app(*args: str, **env: str) -> tuple[int, str, str, set[str]]:
    """`python -X importtime app.py ARGS` with a clean WAN_DEMO_* environment: status, stdout,
    stderr without the import lines, and the top-level packages it imported."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAN_DEMO_")}
    clean.update(COLUMNS="1000", **env)  # one --help line per flag
    cmd = [sys.executable, "-X", "importtime", "app.py", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)
    imported = {
        m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s+(\S+)$", done.stderr, re.M)
    }
    rest = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))
    return done.returncode, done.stdout, rest, imported


def problems_of(argv: list[str], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        from_env(argv, environ={} if environ is None else environ)
    assert caught.value.code == 2
    return caught.value.problems


# --- --help -------------------------------------------------------------------------------------
def test_help_lists_every_setting_in_its_group_without_heavy_imports():
    status, out, err, imported = run_app("--help")
    assert status == 0 and err == "" and "--doctor" in out
    assert not imported & set(HEAVY), f"--help imported {imported & set(HEAVY)}"
    sections = re.split(r"^(\S[^\n]*):\n", out, flags=re.M)
    by_group = dict(zip(sections[1::2], sections[2::2], strict=True))
    assert list(GROUPS) == [g for g in by_group if g in GROUPS]
    for name, (_, spec, default) in TABLE.items():
        entries = re.findall(rf"^  {flag_name(name)}[ ,].*\n(?:  {{3,}}\S.*\n)*", by_group[spec.group], re.M)
        assert len(entries) == 1, name
        line = " ".join(entries[0].split())
        assert spec.help in line and line.count(env_name(name)) == 1, line
        if spec.choices:
            assert "one of " + ", ".join(spec.choices) in line
        if spec.unit:
            assert f"({spec.unit};" in line
        if not spec.secret:
            assert f"default {shown(default)};" in line


def test_every_setting_declares_help_group_and_unit():
    for f in fields(Settings):
        kind, spec, _ = TABLE[f.name]
        assert spec.help and spec.group in GROUPS, f"{f.name}: use opt(GROUP, default, help=...)"
        assert spec.unit or kind not in (int, float), f"{f.name}: a number needs its unit"
        assert f.repr is not bool(spec.secret), f"{f.name}: secrets stay out of repr()"
    assert settings_problems(Settings()) == []  # every default obeys its own rule


def test_choice_lists_have_one_source():
    from wan_demo.core.plan import MODES
    from wan_demo.jobs import logs
    from wan_demo.model import speed, speed_setup
    from wan_demo.model.memory.plan import BY_NAME
    from wan_demo.prompt.extend import RUNNERS

    assert tuple(BY_NAME) == choices.MEMORY_PLANS
    assert tuple(MODES) == choices.SPEED_MODES
    assert speed.CACHES is choices.CACHES and tuple(speed_setup.BACKENDS) == choices.ATTENTION_BACKENDS
    assert tuple(RUNNERS) == choices.PROMPT_BACKENDS
    assert choices.LOG_FORMATS == ("text", "json")  # logs.configure() acts on "json", refuses others
    with pytest.raises(ValueError, match="use one of text, json"):
        logs.configure("xml")


# --- bad values ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, environ, expected",
    [
        (["--port", "abc"], {}, "--port 'abc': not a whole number; must be 1..65535"),
        (["--port", "0"], {}, "--port '0': out of range; must be 1..65535"),
        ([], {"WAN_DEMO_PORT": "abc"}, "WAN_DEMO_PORT='abc': not a whole number; must be 1..65535"),
        ([], {"WAN_DEMO_PORT": "65536"}, "WAN_DEMO_PORT='65536': out of range; must be 1..65535"),
        (["--lease-s", "0.5"], {}, "--lease-s '0.5': out of range; must be >= 1"),
        (["--prompt-timeout-s", "0"], {}, "--prompt-timeout-s '0': out of range; must be > 0"),
        (["--vram-gb", "nan"], {}, "--vram-gb 'nan': not a finite number; must be >= 0"),
        ([], {"WAN_DEMO_COMPILE": "maybe"}, "WAN_DEMO_COMPILE='maybe': not a boolean"),
        (["--storage-url", "/tmp/x"], {}, "--storage-url '/tmp/x': not a s3:// URL (or empty)"),
        (["--webhook-allow-private", "10.0.0.0/33"], {}, "'10.0.0.0/33' is not an IP address or network"),
        (["--device", "gpu"], {}, "--device 'gpu': not a device; use auto, cuda, cpu or cuda:<index>"),
    ],
)
def test_bad_value_names_where_it_came_from_the_value_and_the_rule(argv, environ, expected):
    assert any(expected in p for p in problems_of(argv, environ))


def test_every_problem_is_reported_at_once_and_the_flag_wins():
    found = problems_of(["--port", "x", "--fps", "1"], {"WAN_DEMO_LEASE_S": "0"})
    assert [p.split()[0] for p in found] == ["--fps", "--port", "WAN_DEMO_LEASE_S='0':"]
    assert from_env(["--port", "9000"], environ={"WAN_DEMO_PORT": "8000"}).port == 9000
    assert from_env(["--device", "cuda:1"], environ={}).device == "cuda:1"


def test_unknown_prompt_extender_is_refused_not_auto():
    expected = "not a choice; use one of auto, openai, local, rules, off"
    assert problems_of(["--prompt-extender", "gpt4"]) == [f"--prompt-extender 'gpt4': {expected}"]
    assert problems_of([], {"WAN_DEMO_PROMPT_EXTENDER": "gpt4"}) == [
        f"WAN_DEMO_PROMPT_EXTENDER='gpt4': {expected}"
    ]


def test_settings_that_cannot_work_together():
    assert "needs the step-distilled LoRA" in problems_of(["--speed-mode", "fast"])[0]
    assert from_env(["--speed-mode", "fast", "--role", "api"], environ={}).speed_mode == "fast"
    assert "model is 'tiny'" in problems_of(["--model", "tiny", "--transformer-file", "q.gguf"])[0]


@pytest.mark.parametrize("name", ENUMERATED)
def test_bad_enumerated_value_fails_before_any_model_import(name):
    status, out, err, imported = run_app(**{env_name(name): "bogus"})
    spec = TABLE[name][1]
    assert status == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {env_name(name)}='bogus': ") and all(c in err for c in spec.choices), err
    assert not imported & set(HEAVY), f"{name}: imported {imported & set(HEAVY)} before refusing"


def test_unknown_flag_is_one_line_without_the_usage_dump():
    status, _, err, _ = run_app("--prot", "8000")
    assert status == 2
    assert err == "error: unrecognized arguments: --prot 8000 (python app.py --help lists every setting)"


def test_doctor_runs_after_the_settings_are_checked():
    status, _, err, imported = run_app("--doctor", "--vram-gb", "twelve")
    assert (status, err) == (2, "error: --vram-gb 'twelve': not a number; must be >= 0")
    assert not imported & set(HEAVY)
    status, out, _, _ = run_app("--doctor")  # this CPU machine: the tiny model would run
    assert status == 0 and "would run" in out and "Ready: `python app.py` can start" in out
    assert run_app("--doc")[0] == 2  # no abbreviations: a prefix never means another flag
