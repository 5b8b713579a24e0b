"""docs/troubleshooting.md quotes the start-up errors as the app prints them: each case raises one
through the real code (the function `python app.py` calls at start) and the page must hold its text.

Not raised here (the page quotes them from a real run): PostgreSQL unreachable (a 60 s wait), the
port in use (Gradio's own message), LoRA files diffusers cannot load, torchrun rank failures."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
from doctools import read

from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import REAL_MODEL_ID, Settings, build_parser, from_env

PAGE = " ".join(read("docs/troubleshooting.md").split())  # whitespace-normalised: wrapping is free
STARTUP = "error: Cannot start: "  # how server.main prints a ModelUnavailable from a weights file


def raised(call, kind: type[BaseException] = Exception) -> str:
    with pytest.raises(kind) as caught:
        call()
    return str(caught.value)


def quoted(message: str) -> None:
    assert " ".join(message.split()) in PAGE, f"docs/troubleshooting.md does not quote: {message}"


SETTING_VALUES = [
    ({"WAN_DEMO_PORT": "abc"}, "WAN_DEMO_PORT='abc': invalid literal for int() with base 10: 'abc'"),
    ({"WAN_DEMO_OFFLINE": "maybe"}, "WAN_DEMO_OFFLINE='maybe': expected a boolean, got 'maybe'"),
]


@pytest.mark.parametrize(("env", "message"), SETTING_VALUES)
def test_bad_env_values(env, message):
    assert raised(lambda: from_env([], env), SystemExit) == message
    quoted(message)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--port", "abc"], "error: argument --port: invalid <lambda> value: 'abc'"),
     (["--prot", "1"], "error: unrecognized arguments: --prot 1")],
)  # fmt: skip
def test_bad_flags(argv, message, capsys):
    raised(lambda: build_parser().parse_args(argv), SystemExit)
    assert message in capsys.readouterr().err
    quoted("app.py: " + message)


@pytest.mark.parametrize(
    "changes",
    [dict(role="gpu"), dict(lease_s=0.5), dict(presign_ttl_s=999999999), dict(database_pool_size=0),
     dict(webhook_secret="short"), dict(webhook_allow_private="intranet"), dict(webhook_retry_s=0),
     dict(log_format="xml"), dict(drain_s=-1), dict(metrics_port=70000),
     dict(metrics_token_file="/run/secrets/wan-metrics-token")],
)  # fmt: skip
def test_settings_that_cannot_work(changes):
    from wan_demo.server import settings_problems

    (problem,) = settings_problems(Settings(**changes))
    quoted("error: " + problem)


def test_metrics_port_in_use():
    """A worker's own probe server (WAN_DEMO_METRICS_PORT) on a port another process serves."""
    from wan_demo.jobs.probes import ProbeServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(host="127.0.0.1", metrics_port=taken.getsockname()[1])
        quoted("OSError: " + raised(ProbeServer(None, settings).start, OSError))


def test_store_storage_and_keys():
    from wan_demo.jobs.storage.base import make_storage
    from wan_demo.jobs.store.base import make_store
    from wan_demo.rest.keys import KeyRing, parse_entry

    quoted("error: " + raised(lambda: make_store(Settings(database_url="mysql://x@y/z")), ValueError))
    quoted("error: " + raised(lambda: make_storage(Settings(storage_url="gs://bucket")), ValueError))
    quoted("error: " + raised(lambda: make_storage(Settings(storage_url="s3://")), ValueError))
    quoted("error: " + raised(lambda: parse_entry("sha256:abc"), ValueError))
    missing = Settings(api_key_file="/etc/wan/keys.txt")
    quoted("FileNotFoundError: " + raised(lambda: KeyRing.from_settings(missing), FileNotFoundError))


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

    from wan_demo.model.engine import ModelUnavailable, choose_device, load_real_pipeline, wants_tiny

    tiny_with_file = Settings(model="tiny", transformer_file="x.gguf")
    quoted("error: " + raised(lambda: wants_tiny(tiny_with_file, "cpu"), ValueError))
    # an id no cache holds stands for the real one (a machine may have the real weights cached)
    absent = "nobody/no-such-wan-model"
    message = raised(lambda: load_real_pipeline(absent, Settings(offline=True)), ModelUnavailable)
    quoted("error: " + message.replace(repr(absent), repr(REAL_MODEL_ID)))
    dtype = raised(lambda: load_real_pipeline(absent, Settings(dtype="float99")), AttributeError)
    quoted("AttributeError: " + dtype)
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
    quoted("error: " + check(memory_mode="turbo", vram_gb=24, ram_gb=64))


def test_speed_errors():
    from wan_demo.core.plan import resolve_mode
    from wan_demo.model import distributed, speed, speed_setup

    for name in ("fast", "turbo"):
        with pytest.raises(InvalidRequest) as caught:
            resolve_mode(Settings(speed_mode=name), None, False)
        quoted(f"error: speed_mode: {caught.value.rule}")  # as speed_setup words it at start-up
    quoted("error: " + raised(lambda: speed.cache_config(Settings(cache="teacache")), ValueError))
    quoted("error: " + raised(lambda: speed.cache_config(Settings(cache="magcache")), ValueError))
    quoted("error: " + raised(lambda: speed_setup.set_attention_backend(None, "xformers"), ValueError))
    group = SimpleNamespace(settings=Settings(cache="fbcache"))
    quoted("error: " + raised(lambda: distributed.attach(SimpleNamespace(), group), ValueError))
