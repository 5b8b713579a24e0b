"""docs/troubleshooting.md quotes the start-up errors as the app prints them: each case raises one
through the real code (the function `python app.py` calls at start) and the page must hold its text.

Not raised here (the page quotes them from a real run): PostgreSQL unreachable (a 60 s wait), the
port in use (Gradio's own message), LoRA files diffusers cannot load, torchrun rank failures."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
from doctools import read

from wan_demo.core.cli import SettingsError
from wan_demo.core.settings import REAL_MODEL_ID, Settings, from_env

PAGE = " ".join(read("docs/troubleshooting.md").split())  # whitespace-normalised: wrapping is free
STARTUP = "error: Cannot start: "  # how server.main prints a ModelUnavailable from a weights file


def raised(call, kind: type[BaseException] = Exception) -> str:
    with pytest.raises(kind) as caught:
        call()
    return str(caught.value)


def quoted(message: str) -> None:
    assert " ".join(message.split()) in PAGE, f"docs/troubleshooting.md does not quote: {message}"


# (flags, env vars) -> the one problem from_env reports: the line app.py prints after "error: "
SETTINGS = [
    ([], {"WAN_DEMO_PORT": "abc"}), (["--port", "abc"], {}), ([], {"WAN_DEMO_OFFLINE": "maybe"}),
    ([], {"WAN_DEMO_ROLE": "gpu"}), ([], {"WAN_DEMO_LOG_FORMAT": "xml"}), ([], {"WAN_DEMO_DEVICE": "tpu"}),
    ([], {"WAN_DEMO_LEASE_S": "0.5"}), ([], {"WAN_DEMO_PRESIGN_TTL_S": "999999999"}),
    ([], {"WAN_DEMO_DATABASE_POOL_SIZE": "0"}), ([], {"WAN_DEMO_WEBHOOK_RETRY_S": "0"}),
    ([], {"WAN_DEMO_DRAIN_S": "-1"}), ([], {"WAN_DEMO_METRICS_PORT": "70000"}),
    ([], {"WAN_DEMO_WEBHOOK_SECRET": "short"}), ([], {"WAN_DEMO_WEBHOOK_ALLOW_PRIVATE": "intranet"}),
    ([], {"WAN_DEMO_DATABASE_URL": "mysql://x@y/z"}), ([], {"WAN_DEMO_STORAGE_URL": "gs://bucket"}),
    ([], {"WAN_DEMO_METRICS_TOKEN_FILE": "/run/secrets/wan-metrics-token"}),
    ([], {"WAN_DEMO_API_KEY_FILE": "/etc/wan/keys.txt"}), (["--api-keys", "my-key"], {}),
    ([], {"WAN_DEMO_MODEL": "tiny", "WAN_DEMO_TRANSFORMER_FILE": "x.gguf"}),
    ([], {"WAN_DEMO_SPEED_MODE": "fast"}), (["--prot", "1"], {}), (["--offline", "maybe"], {}),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "env"), SETTINGS)
def test_settings_refused_before_anything_loads(argv, env):
    with pytest.raises(SettingsError) as caught:
        from_env(argv, env)
    assert caught.value.code == 2
    (problem,) = caught.value.problems
    quoted("error: " + problem)


def test_misspelled_variable_warns(caplog):
    from_env([], {"WAN_DEMO_MEMORY_MOD": "fp8_group_block"})
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    quoted(record.getMessage())


def test_metrics_port_in_use():
    """A worker's own probe server (WAN_DEMO_METRICS_PORT) on a port another process serves."""
    from wan_demo.jobs.probes import ProbeServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(host="127.0.0.1", metrics_port=taken.getsockname()[1])
        quoted("OSError: " + raised(ProbeServer(None, settings).start, OSError))


def test_key_entries():
    from wan_demo.rest.keys import parse_entry

    quoted("error: " + raised(lambda: parse_entry("sha256:abc"), ValueError))


def test_s3_bucket_unreachable(monkeypatch):
    from wan_demo.jobs.storage.s3 import S3Storage

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1",
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    message = raised(S3Storage("s3://wan-videos/prod").open, RuntimeError)
    quoted("RuntimeError: " + message.replace(f":{port}/", ":9000/"))  # the page's example endpoint


def test_model_and_device_errors():
    import torch

    from wan_demo.model.engine import ModelUnavailable, choose_device, load_real_pipeline

    # an id no cache holds stands for the real one (a machine may have the real weights cached)
    absent = "nobody/no-such-wan-model"
    message = raised(lambda: load_real_pipeline(absent, Settings(offline=True)), ModelUnavailable)
    quoted("error: " + message.replace(repr(absent), repr(REAL_MODEL_ID)))
    if not torch.cuda.is_available():
        quoted("AssertionError: " + raised(lambda: choose_device(Settings(device="cuda")), AssertionError))


def test_transformer_file_errors(tmp_path, monkeypatch):
    from wan_demo.model.load import read_checkpoint, resolve_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "wan.gguf").write_bytes(b"not a gguf file")
    (tmp_path / "models" / "wan.safetensors").write_bytes(b"\xff" * 100)  # a header length past the end
    (tmp_path / "models" / "wan.bin").write_bytes(b"\0" * 100)  # a format the loader does not read
    for path in ("/srv/models/missing.gguf", "models/wan.gguf", "models/wan.safetensors", "models/wan.bin"):
        quoted(STARTUP + raised(lambda p=path: read_checkpoint(resolve_file(p, offline=True))))
    quoted(STARTUP + raised(lambda: resolve_file("wan-q4.gguf", offline=True)))
    hub = "city96/Wan2.1-I2V-14B-480P-gguf/wan2.1-i2v-14b-480p-Q8_0.gguf"
    try:
        resolve_file(hub, offline=True)
    except Exception as e:  # noqa: BLE001  # not in the cache: the message the page quotes
        quoted(STARTUP + str(e))


def test_memory_errors():
    from wan_demo.model.memory.estimate import Shape
    from wan_demo.model.memory.start import preflight

    def check(**settings) -> str:
        return raised(lambda: preflight(Settings(**settings), "cuda:0", Shape()), (MemoryError, ValueError))

    quoted(STARTUP + check(vram_gb=12, ram_gb=32))
    assert check(vram_gb=4, ram_gb=8).endswith("No transformer file format fits either: use a bigger GPU or "
                                                 "more host RAM.")  # fmt: skip
    quoted("No transformer file format fits either: use a bigger GPU or more host RAM.")


def test_speed_errors():
    from wan_demo.model import distributed

    group = SimpleNamespace(settings=Settings(cache="fbcache"))
    quoted("error: " + raised(lambda: distributed.attach(SimpleNamespace(), group), ValueError))
