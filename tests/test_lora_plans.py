"""Community LoRAs under every memory plan a CPU can apply, on the app's own loader (load_engine):
placements (text encoder on the CPU, model offload, block and leaf group offload without streams)
give the resident frames bit for bit; fp8 storage and GGUF weights (a GGUF file written from the tiny
transformer) run the adapters beside their quantized layers, which they never rewrite; and
merge-on-load (model/lora_merge.py) stays within GGUF rounding of the unfused result and puts every
original tensor back when the set changes.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_latents
from diffusers import WanTransformer3DModel
from diffusers.quantizers.gguf.utils import GGUFLinear

from bench.lora_files import write_diffusers, write_lightx2v, write_musubi, write_wan
from bench.wan_files import write_gguf
from wan_demo.core.request import LoraChoice
from wan_demo.core.settings import Settings
from wan_demo.model.engine import load_engine
from wan_demo.model.lora_merge import REQUANT, growth, requant_type
from wan_demo.model.tiny import save_tiny_pipeline

PLACEMENTS = ["resident_te_cpu", "model_offload", "group_block", "group_leaf"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny folder 64 wide (head_dim 32: city96's layout keeps tensors of <= 1024 weights in F32, so
    64x64 linears are the smallest quantized ones), GGUF files of its transformer, and a library of
    four LoRAs in four layouts."""
    root = tmp_path_factory.mktemp("lora-plans")
    folder = save_tiny_pipeline(str(root / "tiny64"), head_dim=32)
    transformer = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer")
    library = root / "loras"
    library.mkdir()
    write_lightx2v(transformer, library / "a.safetensors", seed=5)
    write_musubi(transformer, library / "b.safetensors", seed=6)
    write_diffusers(transformer, library / "c.safetensors", seed=7, bias=True)
    write_wan(transformer, library / "d.safetensors", seed=8, image_attn=False)
    ggufs = {q: write_gguf(transformer, root / f"t-{q}.gguf", q) for q in ("Q8_0", "Q4_0")}
    return folder, library, ggufs, root


TWO = (LoraChoice("a.safetensors", 0.8), LoraChoice("b.safetensors", -0.5))
FOUR = (*TWO, LoraChoice("c.safetensors", 1.0), LoraChoice("d.safetensors", 0.6))


def engine(setup, **changes):
    folder, library, _, root = setup
    settings = Settings(model=folder, device="cpu", prompt_extender="off", lora_dir=library,
                        data_dir=root / "data", vram_gb=8, ram_gb=16, **changes)  # fmt: skip
    return load_engine(settings)


def run(engine, choices=TWO) -> torch.Tensor:
    engine.loras.apply(engine.pipe, choices, fast=False)
    return tiny_latents(engine.pipe)


@pytest.fixture(scope="module")
def resident(setup):
    e = engine(setup)
    return e, run(e), run(e, ())


@pytest.mark.parametrize("mode", PLACEMENTS)
def test_placements_give_the_resident_frames_with_loras(setup, resident, mode):
    e = engine(setup, memory_mode=mode)
    assert e.details["memory"]["strategy"] == mode
    assert torch.equal(run(e), resident[1])  # placement moves weights and adapters, never rounds
    assert torch.equal(run(e, ()), resident[2])  # and no LoRA is the base model again


def test_fp8_storage_runs_the_adapters_in_the_compute_dtype(setup, resident):
    e = engine(setup, memory_mode="fp8_resident")
    with_loras = run(e)
    layer = e.pipe.transformer.blocks[0].attn1.to_q
    assert layer.base_layer.weight.dtype == torch.float8_e4m3fn
    assert {p.dtype for n, p in layer.named_parameters() if "lora_" in n} == {torch.bfloat16}
    diff = (with_loras.float() - resident[1].float()).abs().mean() / resident[1].float().abs().mean()
    assert 0 < diff < 0.05, diff  # fp8 rounding only (e4m3: 3 mantissa bits)
    assert not torch.allclose(with_loras, run(e, ()))


@pytest.mark.parametrize("mode", ["resident", "model_offload", "group_block"])
def test_gguf_weights_take_loras_and_keep_their_blocks(setup, mode):
    _, _, ggufs, _ = setup
    e = engine(setup, transformer_file=str(ggufs["Q8_0"]), memory_mode=mode)
    stored = e.pipe.transformer.blocks[0].attn1.to_q.weight.detach().clone()
    with_loras = run(e)
    layer = e.pipe.transformer.blocks[0].attn1.to_q
    assert isinstance(layer.base_layer, GGUFLinear) and layer.base_layer.weight.quant_type.name == "Q8_0"
    reference = engine(setup, transformer_file=str(ggufs["Q8_0"]))  # GGUF, resident
    assert torch.equal(with_loras, run(reference)) and not torch.equal(with_loras, run(e, ()))
    assert torch.equal(layer.base_layer.weight, stored)  # the adapters never rewrite a GGUF block


# --- merge-on-load -------------------------------------------------------------------------------
def forward(transformer) -> torch.Tensor:
    from test_gguf import forward as gguf_forward

    return gguf_forward(transformer)


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_0"])
def test_merged_gguf_is_within_gguf_rounding_of_unfused_and_switches_back_exactly(setup, quant):
    _, _, ggufs, _ = setup
    e = engine(setup, transformer_file=str(ggufs[quant]), lora_merge_after=2)
    t = e.pipe.transformer
    originals = {n: p.detach().clone() for n, p in t.named_parameters() if "lora_" not in n}
    types = {n: p.quant_type.name for n, p in t.named_parameters() if hasattr(p, "quant_type")}
    plain = forward(t)
    first = e.loras.apply(e.pipe, FOUR, fast=False)
    unfused = forward(t)
    second = e.loras.apply(e.pipe, FOUR, fast=False)  # the second run in a row: merged
    merged = forward(t)
    assert {d["applied"] for d in first} == {"unfused adapter"}
    (applied,) = {d["applied"] for d in second}
    assert applied.startswith(f"merged into {quant} weights")  # city96's mixes keep a few other types
    after = {
        n.replace(".base_layer", ""): p.quant_type.name
        for n, p in t.named_parameters()
        if hasattr(p, "quant_type")
    }
    assert after == types  # maintained quantizers: every layer stored back in its own type
    # "GGUF rounding": what storing the bf16 model as `quant` changes, measured on the same forward.
    # Merging rounds W + delta once more to the same type: the same order, never more than 1.5x.
    scale = unfused.abs().mean()
    quantized = ((plain - forward(engine(setup).pipe.transformer)).abs().mean() / scale).item()
    lora_effect = ((unfused - plain).abs().mean() / scale).item()
    rounding = ((merged - unfused).abs().mean() / scale).item()
    assert 0 < rounding < 1.5 * quantized and rounding < lora_effect, (rounding, quantized, lora_effect)
    e.loras.apply(e.pipe, TWO, fast=False)  # another set: the originals come back, exactly
    for name, value in t.named_parameters():
        if "lora_" not in name:
            assert torch.equal(value, originals[name.replace(".base_layer", "")]), name
    e.loras.apply(e.pipe, (), fast=False)
    assert torch.equal(forward(t), plain)


def test_merged_bf16_and_the_policy(setup):
    e = engine(setup, lora_merge_after=1)
    t = e.pipe.transformer
    e.loras.apply(e.pipe, (), fast=False)
    before = {
        n.replace(".base_layer", ""): p.detach().clone() for n, p in t.named_parameters() if "lora_" not in n
    }
    merged = e.loras.apply(e.pipe, TWO, fast=False)  # after=1: merged at once
    assert {d["applied"] for d in merged} == {"merged into bfloat16 weights"}
    changed = t.blocks[0].attn1.to_q.base_layer.weight
    assert not torch.equal(changed, before["blocks.0.attn1.to_q.weight"])
    unmerged = engine(setup)
    diff = (forward(t) - forward_with(unmerged, TWO)).abs().mean() / forward(t).abs().mean()
    assert diff < 0.02, diff  # bf16 rounding of W + delta
    e.loras.apply(e.pipe, (), fast=False)
    for name, value in t.named_parameters():
        if "lora_" not in name:
            assert torch.equal(value, before[name.replace(".base_layer", "")]), name
    offloaded = engine(setup, lora_merge_after=1, memory_mode="group_block")
    assert {d["applied"] for d in offloaded.loras.apply(offloaded.pipe, TWO, fast=False)} == {
        "unfused adapter"
    }


def forward_with(e, choices) -> torch.Tensor:
    e.loras.apply(e.pipe, choices, fast=False)
    return forward(e.pipe.transformer)


def test_requantization_types_and_their_growth():
    """gguf 0.19 quantizes Q8_0, Q5_1, Q5_0, Q4_1, Q4_0 (and F16/BF16), not the K-quants: a K-quant
    layer goes to the nearest maintained type at or above its precision."""
    import gguf
    import numpy as np

    for source, target in REQUANT.items():
        data = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
        gguf.quants.quantize(data, gguf.GGMLQuantizationType[target])  # a maintained quantizer
        if source != target:
            with pytest.raises(NotImplementedError):
                gguf.quants.quantize(data, gguf.GGMLQuantizationType[source])
    assert requant_type("Q4_K") == "Q5_0" and requant_type("Q6_K") == "Q8_0"
    assert growth("Q8_0") == 0 and growth("bf16") == 0
    assert growth("Q4_K_M") == pytest.approx((22 / 32) / (144 / 256) - 1)
    with pytest.raises(ValueError, match="no maintained quantizer for GGUF type IQ2_XS"):
        requant_type("IQ2_XS")
