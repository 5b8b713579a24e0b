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


def test_scale_out_settings_are_checked_before_start():
    from wan_demo.core.settings import settings_problems

    assert settings_problems(Settings()) == []
    bad = Settings(role="gpu", lease_s=0.5, presign_ttl_s=10**7, database_pool_size=0)
    assert sorted(p.split()[0] for p in settings_problems(bad)) == [
        "database_pool_size",
        "lease_s",
        "presign_ttl_s",
        "role",
    ]
