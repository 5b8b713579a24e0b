"""Speed modes: resolve(), the fast LoRA (adapter on/off per request), step cache, attention backend."""

from __future__ import annotations

import pytest
import torch
from conftest import ask
from PIL import Image

from bench.forwards import ForwardCounter, write_tiny_lora
from wan_demo.core.plan import MODES, resolve_mode
from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import Settings
from wan_demo.generate import generate
from wan_demo.model import speed
from wan_demo.model.speed_setup import set_attention_backend
from wan_demo.model.tiny import build_tiny_pipeline

TEST_AREA = 64 * 64


def test_resolve_defaults_and_overrides():
    s = Settings()
    assert resolve_mode(s, None, fast_available=True).name == "fast"
    assert resolve_mode(s, None, fast_available=False) == MODES["quality"]
    assert resolve_mode(s, "quality", fast_available=True).steps == 40
    fast = resolve_mode(s, "fast", fast_available=True)
    assert (fast.steps, fast.guidance, fast.shift) == (4, 1.0, 5.0)
    assert resolve_mode(Settings(speed_mode="quality"), None, True).name == "quality"
    assert resolve_mode(Settings(steps=7), "quality", True).steps == 7


def test_fast_without_lora_is_a_clear_input_error(engine, settings, image):
    with pytest.raises(InvalidRequest, match="'fast' needs the step-distilled LoRA"):
        generate(ask(image, "a cat", speed_mode="fast"), engine, settings)


def test_cache_settings_are_checked():
    assert speed.cache_config(Settings()) is None
    assert speed.cache_config(Settings(cache="fbcache", cache_threshold=0.1)).threshold == 0.1
    assert speed.cache_config(Settings(cache="magcache"), 40).num_inference_steps == 40  # test_magcache.py
    with pytest.raises(ValueError, match="'teacache'"):
        speed.cache_config(Settings(cache="teacache"))


def _latents(pipe, steps: int = 2, guidance: float = 1.0) -> torch.Tensor:
    return pipe(
        image=Image.new("RGB", (32, 32), (30, 140, 90)), prompt="a dog", height=32, width=32, num_frames=5,
        num_inference_steps=steps, guidance_scale=guidance, output_type="latent",
        generator=torch.Generator("cpu").manual_seed(0),
    ).frames  # fmt: skip


@pytest.fixture(scope="module")
def lora_engine(tmp_path_factory):
    """An engine of our own (never the shared fixture): tiny model + local LoRA + FirstBlockCache."""
    from wan_demo.model.engine import load_engine

    tmp = tmp_path_factory.mktemp("lora")
    s = Settings(model="tiny", device="cpu", tiny_max_area=TEST_AREA, lora=str(write_tiny_lora(tmp)),
                 cache="fbcache", output_dir=tmp / "out", prompt_extender="off")  # fmt: skip
    return load_engine(s), s


def test_lora_adapter_switches_on_and_off_without_touching_weights(lora_engine):
    engine, s = lora_engine
    pipe = engine.pipe
    assert engine.fast_available and engine.details["speed"]["default_mode"] == "fast"
    assert speed.lora_active(pipe) and not pipe.transformer.is_cache_enabled  # fast: adapter on, no cache
    weights = {k: v.clone() for k, v in pipe.transformer.state_dict().items() if "lora" not in k}
    fast = _latents(pipe)
    reference = _latents(build_tiny_pipeline())  # same seed, no LoRA

    speed.activate(pipe, "quality", s)
    assert not speed.lora_active(pipe) and pipe.transformer.is_cache_enabled
    speed.set_cache(pipe, s, on=False)  # compare weights only
    assert torch.equal(_latents(pipe), reference)  # adapter off = the base model, bit for bit
    assert not torch.allclose(fast, reference)  # the LoRA changes the output

    speed.activate(pipe, "fast", s)
    assert torch.equal(_latents(pipe), fast)  # on again: exactly fast mode again
    for k, v in pipe.transformer.state_dict().items():  # no mode switch ever rewrites a base weight
        if "lora" not in k:
            assert torch.equal(v, weights[k]), k


def test_requests_switch_modes_and_cache_on_one_engine(lora_engine, image):
    engine, s = lora_engine
    counter = ForwardCounter(engine.pipe.transformer)
    s = s.replace(steps=8)

    quality = generate(ask(image, "a cat", speed_mode="quality", seed=3), engine, s)
    assert quality.settings["speed_mode"] == "quality" and quality.settings["guidance"] == 5.0
    assert counter.calls == 16 and counter.computed < counter.calls  # CFG: 2 per step; cache skips some

    counter.calls = counter.computed = 0
    fast = generate(ask(image, "a cat", speed_mode="fast", seed=3), engine, s)
    assert fast.settings["speed_mode"] == "fast" and fast.settings["guidance"] == 1.0
    assert counter.calls == counter.computed == 8  # cache off in fast mode, CFG off
    assert fast.num_frames == quality.num_frames == 81
    assert speed.lora_active(engine.pipe)


def test_attention_backend_falls_back_without_leaking_the_global_default():
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    before = _AttentionBackendRegistry._active_backend
    pipe = build_tiny_pipeline()
    assert set_attention_backend(pipe, "native") == "native"
    assert set_attention_backend(pipe, "flash") == "native"  # flash_attn is not installed here
    assert _AttentionBackendRegistry._active_backend == before
    with pytest.raises(ValueError, match="attention_backend 'xformers2'"):
        set_attention_backend(pipe, "xformers2")


@pytest.mark.slow
def test_compile_warms_up_at_load(tmp_path, image):
    """Regional torch.compile of the tiny blocks on CPU (inductor needs gcc; minutes on 2 cores)."""
    from wan_demo.model.engine import load_engine

    s = Settings(model="tiny", device="cpu", tiny_max_area=TEST_AREA, compile=True, steps=2,
                 output_dir=tmp_path, prompt_extender="off")  # fmt: skip
    engine = load_engine(s)
    assert engine.details["speed"]["compiled"]
    assert generate(ask(image, "a cat"), engine, s).num_frames == 81


def test_the_fast_adapter_has_one_name():
    from wan_demo.model import loras, speed

    assert speed.ADAPTER == loras.FAST_ADAPTER == "fast"
