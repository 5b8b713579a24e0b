"""Quantized and single-file transformers through the app's own loader (load_engine with
Settings.transformer_file), the lightx2v LoRA layout on them, memory plans, and bad files.

Default tier: a tiny transformer 64 wide (head_dim 32: city96's converter keeps tensors of <= 1024
weights in F32, so 64x64 linears are the smallest it quantizes), written in the published key layout
and city96's per-tensor types by bench/wan_files.py (LoRAs: bench/lora_files.py). K-quant files:
tests/test_gguf_kquants.py.
The real-width loader test is in the slow tier (test_real_width_files_load_and_stay_close): 2 blocks
of the real 5120-wide model are ~1 B params.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_latents
from diffusers import WanTransformer3DModel
from diffusers.quantizers.gguf.utils import GGUFLinear

from bench.lora_files import write_lightx2v
from bench.wan_files import write_gguf, write_transformer_files
from wan_demo.core.settings import Settings
from wan_demo.model import speed
from wan_demo.model.engine import ModelUnavailable, load_engine
from wan_demo.model.tiny import save_tiny_pipeline


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return save_tiny_pipeline(str(tmp_path_factory.mktemp("gguf") / "tiny64"), head_dim=32)


@pytest.fixture(scope="module")
def files(folder, tmp_path_factory) -> dict[str, Path]:
    transformer = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer")
    return write_transformer_files(transformer, tmp_path_factory.mktemp("gguf-files"))


def _engine(folder, **changes):
    return load_engine(Settings(model=folder, device="cpu", prompt_extender="off", **changes))


def forward(transformer, seed: int = 0) -> torch.Tensor:
    """One transformer forward on fixed random inputs (2 latent frames of 8x8, 8 text tokens)."""
    g = torch.Generator().manual_seed(seed)
    c = transformer.config
    x = torch.randn(1, c.in_channels, 2, 8, 8, generator=g)
    text = torch.randn(1, 8, c.text_dim, generator=g)
    image = torch.randn(1, 5, c.image_dim, generator=g)
    with torch.no_grad():
        out = transformer(
            x.bfloat16(), torch.tensor([500]), text.bfloat16(), image.bfloat16(), return_dict=False
        )
    return out[0].float()


def test_files_load_through_the_app_loader_and_stay_close(folder, files):
    outputs, engines = {}, {}
    for kind, path in files.items():
        engine = engines[kind] = _engine(folder, transformer_file=str(path))
        t = engine.pipe.transformer
        info = engine.details["weights"]
        assert info["transformer_file"] == str(path) and Path(info["transformer_file"]).exists()
        if kind == "bf16":
            assert isinstance(t.blocks[0].attn1.to_q, torch.nn.Linear) and info["transformer"] == "bfloat16"
            assert t.blocks[0].ffn.net[2].weight.dtype == torch.bfloat16
        else:
            q = t.blocks[0].attn1.to_q
            assert (
                isinstance(q, GGUFLinear)
                and q.weight.quant_type.name == kind
                and q.weight.dtype == torch.uint8
            )
            assert tuple(q.weight.quant_shape) == (q.out_features, q.in_features)
            # 12 linears per block, 2 blocks; city96's Q4_0 mix stores ffn.2 as Q4_1
            types = {kind: 24} if kind == "Q8_0" else {kind: 22, "Q4_1": 2}
            assert info["transformer"] == f"{kind} (GGUF)" and info["tensor_types"].items() >= types.items()
            assert f"transformer {kind} (GGUF)" in engine.banner
            assert t.patch_embedding.weight.shape == (64, 36, 1, 2, 2)  # a native 5-D F32 tensor in the file
        outputs[kind] = forward(t)
    scale = outputs["bf16"].abs().mean()
    err = {k: ((outputs[k] - outputs["bf16"]).abs().mean() / scale).item() for k in ("Q8_0", "Q4_0")}
    assert 0 < err["Q8_0"] < 0.02 and err["Q8_0"] * 3 < err["Q4_0"] < 0.25, err  # Q8 far tighter than Q4


@pytest.mark.parametrize(
    "mode", ["model_offload", "group_block", "group_leaf", "resident_te_cpu", "fp8_resident"]
)
def test_gguf_transformer_runs_under_every_plan_on_cpu(folder, files, mode):
    """Placement never changes a GGUF run (meta-tensor pitfalls of GGUF + offload: diffusers #12009,
    #14691 for sequential offload, which the planner never picks with GGUF); fp8 plans store only the
    text encoder in fp8 (the GGUF transformer stays as it is)."""
    reference = tiny_latents(_engine(folder, transformer_file=str(files["Q8_0"])).pipe)
    engine = _engine(folder, transformer_file=str(files["Q8_0"]), memory_mode=mode, vram_gb=8, ram_gb=16)
    assert engine.details["memory"]["strategy"] == mode
    assert isinstance(engine.pipe.transformer.blocks[0].attn1.to_q, GGUFLinear)
    latents = tiny_latents(engine.pipe)
    if mode.startswith("fp8"):
        assert (
            engine.pipe.text_encoder.encoder.block[0].layer[0].SelfAttention.q.weight.dtype
            == torch.float8_e4m3fn
        )
        assert latents.shape == reference.shape and torch.isfinite(latents).all()
    else:
        assert torch.equal(latents, reference)


# --- the lightx2v LoRA in its published layout ---------------------------------------------------
@pytest.fixture(scope="module")
def lightx2v(folder, tmp_path_factory) -> Path:
    transformer = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer")
    return write_lightx2v(
        transformer, tmp_path_factory.mktemp("lightx2v") / "lightx2v_rank4.safetensors"
    ).path


# every linear of every block; the norms' zero `diff` and the modulation `diff_m` are dropped by diffusers
LORA_TARGETS = {f"blocks.{i}.{m}" for i in range(2) for m in (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
    "attn2.to_out.0", "attn2.add_k_proj", "attn2.add_v_proj", "ffn.net.0.proj", "ffn.net.2")}  # fmt: skip


def _wrapped(transformer) -> set[str]:
    return {
        n.removesuffix(".base_layer")
        for n, m in transformer.named_modules()
        if hasattr(m, "lora_A") and m.lora_A
    }


def test_lightx2v_layout_changes_exactly_the_block_linears(folder, lightx2v):
    """On the bf16 model: fusing a copy shows which weights the LoRA changes (weights and, through
    `diff_b`, biases of every block linear; nothing else), while the app keeps it unfused."""
    engine = _engine(folder, lora=str(lightx2v))
    pipe = engine.pipe
    assert _wrapped(pipe.transformer) == LORA_TARGETS and speed.lora_active(pipe)
    base = {
        k.replace(".base_layer", ""): v.clone()
        for k, v in pipe.transformer.state_dict().items()
        if "lora" not in k
    }
    pipe.fuse_lora(components=["transformer"], lora_scale=1.0)
    fused = {
        k.replace(".base_layer", ""): v for k, v in pipe.transformer.state_dict().items() if "lora" not in k
    }
    changed = {
        k.rsplit(".", 1)[0] + "." + k.rsplit(".", 1)[1] for k in base if not torch.equal(base[k], fused[k])
    }
    assert changed == {f"{t}.{p}" for t in LORA_TARGETS for p in ("weight", "bias")}


def test_lightx2v_layout_on_a_gguf_transformer(folder, files, lightx2v):
    engine = _engine(folder, transformer_file=str(files["Q4_0"]), lora=str(lightx2v))
    pipe = engine.pipe
    assert _wrapped(pipe.transformer) == LORA_TARGETS
    base_layer = pipe.transformer.blocks[0].attn1.to_q.base_layer
    assert isinstance(base_layer, GGUFLinear) and base_layer.weight.quant_type.name == "Q4_0"
    stored = base_layer.weight.clone()
    fast = tiny_latents(pipe)
    speed.set_lora(pipe, fast=False)
    quality = tiny_latents(pipe)
    assert not torch.allclose(fast, quality)  # the adapter acts on the quantized layers
    assert torch.equal(base_layer.weight, stored)  # and never rewrites them
    speed.set_lora(pipe, fast=True)
    assert torch.equal(tiny_latents(pipe), fast)


# --- bad files: one clear start-up error naming the file and the problem -------------------------
def test_truncated_gguf_is_refused_by_name(folder, files, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(files["Q8_0"].read_bytes()[:-5000])
    with pytest.raises(ModelUnavailable, match=r"cut\.gguf.*(truncated|not a complete GGUF)"):
        _engine(folder, transformer_file=str(cut))


def test_shapes_of_another_model_are_refused_by_name(folder, tmp_path):
    other = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer")
    wider = WanTransformer3DModel.from_config({**other.config, "ffn_dim": 64})
    path = write_gguf(wider, tmp_path / "other.gguf", "Q8_0")
    with pytest.raises(ModelUnavailable, match=r"other\.gguf.*shapes that do not match.*ffn"):
        _engine(folder, transformer_file=str(path))


def test_unsupported_quant_type_is_refused_by_name(folder, files, tmp_path):
    import gguf

    path = tmp_path / "q8_1.gguf"
    writer = gguf.GGUFWriter(str(path), arch="wan")
    raw = np.zeros((32, 40), dtype=np.uint8)  # one Q8_1 block per row (40 bytes for 32 weights)
    writer.add_tensor(
        "blocks.0.ffn.0.weight", raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_1
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelUnavailable, match=r"q8_1\.gguf.*quant type Q8_1, which is not supported"):
        _engine(folder, transformer_file=str(path))


def test_missing_file_and_tiny_model_with_a_file_are_refused(folder, files):
    with pytest.raises(ModelUnavailable, match="nope.gguf.*no such file"):
        _engine(folder, transformer_file="/nope.gguf")
    with pytest.raises(ValueError, match="transformer_file is set but model is 'tiny'"):
        load_engine(Settings(model="tiny", device="cpu", transformer_file=str(files["Q8_0"])))


def test_lora_for_another_model_is_refused_by_name(folder, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "flux_lora.safetensors"
    key = "transformer.single_transformer_blocks.0.attn.to_q"  # a Flux LoRA's keys
    save_file(
        {f"{key}.lora_A.weight": torch.zeros(4, 3072), f"{key}.lora_B.weight": torch.zeros(3072, 4)},
        str(path),
    )
    with pytest.raises(ValueError, match=r"lora '.*flux_lora\.safetensors'"):
        _engine(folder, lora=str(path))


@pytest.mark.slow
def test_real_width_files_load_and_stay_close(tmp_path):
    """2 of the 40 blocks at the real width (dim 5120, ffn 13824): written as bf16 safetensors and
    GGUF Q8_0 / Q4_0 in the published layout, loaded by the app's loader (~4 GB, a few minutes)."""
    from bench.load import write_files
    from wan_demo.model.load import load_transformer_file

    files = write_files(tmp_path, blocks=2)
    outputs = {}
    for kind, path in files.items():
        t = load_transformer_file(str(path), str(tmp_path / "model"), Settings(offline=True))
        ffn = t.blocks[1].ffn.net[0].proj
        assert (ffn.out_features, ffn.in_features) == (13824, 5120) and len(t.blocks) == 2
        if kind == "bf16":
            assert ffn.weight.dtype == torch.bfloat16
        else:
            assert isinstance(ffn, GGUFLinear) and ffn.weight.quant_type.name == kind
            assert tuple(ffn.weight.quant_shape) == (13824, 5120) and ffn.weight.dtype == torch.uint8
            assert t.patch_embedding.weight.shape == (5120, 36, 1, 2, 2)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 36, 1, 16, 16, generator=g).bfloat16()
        text = torch.randn(1, 16, 4096, generator=g).bfloat16()
        image = torch.randn(1, 257, 1280, generator=g).bfloat16()
        with torch.no_grad():
            outputs[kind] = t(x, torch.tensor([500]), text, image, return_dict=False)[0].float()
        del t
    scale = outputs["bf16"].abs().mean()
    err = {k: ((outputs[k] - outputs["bf16"]).abs().mean() / scale).item() for k in ("Q8_0", "Q4_0")}
    assert 0 < err["Q8_0"] < 0.02 and err["Q8_0"] * 3 < err["Q4_0"] < 0.3, err
