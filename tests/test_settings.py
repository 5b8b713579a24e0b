from pathlib import Path

import pytest

from wan_demo.core.settings import Settings, from_env


def test_defaults_without_env_or_flags():
    assert from_env([], environ={}) == Settings()


def test_env_then_cli_wins():
    env = {"WAN_DEMO_PORT": "9000", "WAN_DEMO_MODEL": "tiny", "WAN_DEMO_COMPILE": "yes"}
    s = from_env(["--port", "9100", "--output-dir", "/tmp/x", "--no-compile"], environ=env)
    assert s.port == 9100 and s.model == "tiny" and s.compile is False
    assert s.output_dir == Path("/tmp/x")


def test_bad_env_value_names_the_variable():
    with pytest.raises(SystemExit, match="WAN_DEMO_PORT='abc'"):
        from_env([], environ={"WAN_DEMO_PORT": "abc"})


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]
