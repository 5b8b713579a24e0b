"""Secrets come only from the environment or a file, never a flag; unknown WAN_DEMO_* variables are
named with the nearest setting; docs/settings.md is the generated reference and its examples hold."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

import pytest

from wan_demo.core import settings_doc
from wan_demo.core.cli import SettingsError
from wan_demo.core.settings import Settings, from_env, settings_problems
from wan_demo.jobs.probes import metrics_token

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "settings.md"
SECRET = "s3cr3t-value-that-must-not-leak-0123456789"
WHY = "a secret on the command line is visible to every user of this machine"


def problems_of(argv: list[str], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        from_env(argv, environ={} if environ is None else environ)
    return caught.value.problems


# --- secrets ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flag, value, alternative",
    [
        ("--api-keys", SECRET, "set WAN_DEMO_API_KEYS or --api-key-file <file> instead"),
        ("--openai-api-key", SECRET, "set WAN_DEMO_OPENAI_API_KEY or --openai-api-key-file <file> instead"),
        ("--webhook-secret", SECRET, "set WAN_DEMO_WEBHOOK_SECRET or --webhook-secret-file <file> instead"),
        ("--metrics-token", SECRET, "set WAN_DEMO_METRICS_TOKEN or --metrics-token-file <file> instead"),
        ("--database-url", f"postgresql://app:{SECRET}@db:5432/jobs", "set WAN_DEMO_DATABASE_URL or "),
        ("--database-url", f"postgresql://db/jobs?password={SECRET}", "--database-url-file <file> instead"),
        ("--openai-base-url", f"https://me:{SECRET}@llm.example/v1", "set WAN_DEMO_OPENAI_BASE_URL instead"),
    ],
)
def test_secret_flag_is_refused_with_the_reason_and_the_alternative(flag, value, alternative):
    (found,) = problems_of([flag, value])
    assert found.startswith(f"{flag}: refused: {WHY}") and alternative in found
    assert SECRET not in found


def test_the_same_secrets_are_taken_from_the_environment_and_kept_out_of_repr():
    env = {"WAN_DEMO_API_KEYS": SECRET, "WAN_DEMO_DATABASE_URL": f"postgresql://app:{SECRET}@db/jobs"}
    settings = from_env([], environ=env)
    assert settings.api_keys == SECRET and SECRET not in repr(settings)
    # a URL without a password is no secret: the flag is fine
    assert from_env(["--database-url", "postgresql://app@db/jobs"], environ={}).database_url.endswith("/jobs")


def test_a_bad_secret_is_named_but_never_repeated():
    (found,) = problems_of([], {"WAN_DEMO_WEBHOOK_SECRET": "short-secret"})
    assert found == "WAN_DEMO_WEBHOOK_SECRET: shorter than 32 characters"


def test_secret_files_are_read_once_and_checked(tmp_path, caplog):
    key = tmp_path / "openai.key"
    key.write_text(f"{SECRET}\n")
    key.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        settings = from_env(["--openai-api-key-file", str(key)], environ={})
    assert settings.openai_api_key == SECRET and not caplog.records
    key.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        from_env([], environ={"WAN_DEMO_OPENAI_API_KEY_FILE": str(key)})
    assert "is readable by every user (mode 644); chmod 600 it" in caplog.text and SECRET not in caplog.text
    both = {"WAN_DEMO_OPENAI_API_KEY": "x", "WAN_DEMO_OPENAI_API_KEY_FILE": str(key)}
    assert problems_of([], both) == [
        "WAN_DEMO_OPENAI_API_KEY and WAN_DEMO_OPENAI_API_KEY_FILE are both set; keep one"
    ]
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "big").write_bytes(b"k" * (2 << 20))
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    cases = {
        str(tmp_path / "nope"): "no such file",
        str(tmp_path): "not a regular file",
        "/dev/zero": "not a regular file",  # never read until memory runs out
        str(tmp_path / "big"): "larger than 1024 KB: not a secret file",
        str(tmp_path / "binary"): "not UTF-8 text",
        str(tmp_path / "empty"): "the file is empty",
    }
    for path, why in cases.items():
        assert problems_of(["--webhook-secret-file", path]) == [f"--webhook-secret-file {path!r}: {why}"]
    assert problems_of([], {"WAN_DEMO_API_KEY_FILE": "/nope"}) == [
        "WAN_DEMO_API_KEY_FILE '/nope': no such file"
    ]
    # a Settings built in code is checked the same way before the server starts
    code = Settings(metrics_token_file=str(tmp_path), api_key_file=str(tmp_path / "big"))
    assert settings_problems(code) == [
        f"metrics_token_file {str(tmp_path)!r}: not a regular file",
        f"api_key_file {str(tmp_path / 'big')!r}: larger than 1024 KB: not a secret file",
    ]


def test_metrics_token_file_keeps_its_rules(tmp_path):
    """Issue 25's token file: its first line is the token and it wins over the variable (the reader,
    jobs/probes.py, takes it); start-up only checks that it is a readable secret file."""
    token = tmp_path / "token"
    token.write_text("from-the-file\nsecond line\n")
    token.chmod(0o600)
    env = {"WAN_DEMO_METRICS_TOKEN": "from-the-env", "WAN_DEMO_METRICS_TOKEN_FILE": str(token)}
    settings = from_env([], environ=env)
    assert metrics_token(settings) == "from-the-file" and "from-the" not in repr(settings)
    assert metrics_token(from_env(["--metrics-token-file", str(token)], environ={})) == "from-the-file"


# --- unknown variables ----------------------------------------------------------------------------
def test_unknown_variable_warns_with_the_nearest_setting(caplog):
    env = {"WAN_DEMO_MEMORY_MOD": "fp8_group_block", "WAN_DEMO_XYZZY": "1", "wan_demo_port": "9000"}
    with caplog.at_level(logging.WARNING):
        assert from_env([], environ=env) == Settings()  # ignored, as before: a warning, not an error
    assert caplog.messages == [
        "WAN_DEMO_MEMORY_MOD is not a setting; did you mean WAN_DEMO_MEMORY_MODE?",
        "WAN_DEMO_XYZZY is not a setting; python app.py --help lists every setting",
        "wan_demo_port is not a setting; did you mean WAN_DEMO_PORT?",
    ]


# --- docs/settings.md ---------------------------------------------------------------------------
def test_settings_page_is_the_generated_reference():
    text = DOC.read_text()
    assert settings_doc.markdown() in text, (
        "docs/settings.md is stale: run python -m wan_demo.core.settings_doc docs/settings.md"
    )
    assert text.count(settings_doc.BEGIN) == 1 and text.count(settings_doc.END) == 1


def test_settings_page_examples_print_what_they_show():
    """Each `$ command` of the page's console block runs in bash; its output is compared verbatim."""
    block = re.search(r"```console\n(.*?)```", DOC.read_text(), flags=re.S).group(1)
    examples = re.findall(r"^\$ (.+)\n((?:(?!\$ ).*\n)*)", block, flags=re.M)
    assert len(examples) >= 4
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAN_DEMO_")}
    for command, expected in examples:
        done = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=60,
        )  # fmt: skip
        assert done.stdout == expected, command
