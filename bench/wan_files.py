"""Write Wan transformers and LoRAs in the key layouts of the PUBLISHED files, for tests and benches.

- `write_transformer_files`: a WanTransformer3DModel as a single .safetensors (bf16) and as GGUF
  files (Q8_0, Q4_0, ... quantized with the `gguf` package) in the original Wan key layout that
  city96/Wan2.1-I2V-14B-480P-gguf uses (`blocks.0.self_attn.q.weight`, `head.modulation`, ...),
  with city96's per-tensor types (bench/gguf_files.py: the native 5-D F32 patch embedding, F32
  embeddings and head, block linears quantized).
- `write_lightx2v_lora`: a random LoRA in the key layout of Kijai's
  lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors (`diffusion_model.` prefix,
  lora_down / lora_up / alpha, `diff_b` bias deltas, `diff` norm deltas, `diff_m` modulation).

The `gguf` package can quantize Q8_0/Q5_x/Q4_x but not the K types (Q6_K, Q4_K, ...): K-quant files
with random codes come from bench/gguf_files.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

from wan_demo.model.gguf_layout import original_key


def original_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The original-layout state dict; checked against diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    state = {original_key(k): v.detach() for k, v in transformer.state_dict().items()}
    back = convert_wan_transformer_to_diffusers(dict(state))
    assert set(back) == set(transformer.state_dict()), set(back) ^ set(transformer.state_dict())
    return state


def write_safetensors(transformer: torch.nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    state = {k: v.to(torch.bfloat16).contiguous() for k, v in original_state_dict(transformer).items()}
    save_file(state, str(path))
    return path


def write_gguf(transformer: torch.nn.Module, path: Path, quant: str) -> Path:
    """One GGUF file of file type `quant` (Q8_0, Q4_0, Q5_0, ...) in city96's layout (bench/gguf_files.py),
    its quantized tensors quantized from the transformer's weights by gguf-py."""
    from bench import gguf_files

    state = {k: v.float().numpy() for k, v in original_state_dict(transformer).items()}
    return gguf_files.write(path, {k: v.shape for k, v in state.items()}, quant, weights=state)


def write_transformer_files(transformer: torch.nn.Module, folder: Path, quants=("Q8_0", "Q4_0")) -> dict:
    """{"bf16": .safetensors, "Q8_0": .gguf, ...} in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"bf16": write_safetensors(transformer, folder / "transformer-bf16.safetensors")}
    for q in quants:
        files[q] = write_gguf(transformer, folder / f"transformer-{q}.gguf", q)
    return files


# --- lightx2v LoRA layout -----------------------------------------------------------------------
LORA_LINEARS = ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q",
                "cross_attn.k", "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img",
                "ffn.0", "ffn.2"]  # fmt: skip
LORA_NORMS = ["self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k",
              "cross_attn.norm_k_img", "norm3"]  # fmt: skip


def write_lightx2v_lora(transformer: torch.nn.Module, path: Path, rank: int = 4, seed: int = 1) -> Path:
    """Random LoRA for every block linear (down/up/alpha + diff_b), zero norm diffs, diff_m."""
    from safetensors.torch import save_file

    modules = dict(transformer.named_modules())
    by_original = {original_key(k + "."): k for k in modules}  # "blocks.0.self_attn.q." -> diffusers name
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for i in range(len(transformer.blocks)):
        for name in LORA_LINEARS:
            layer = modules[by_original[f"blocks.{i}.{name}."]]
            key = f"diffusion_model.blocks.{i}.{name}"
            out[f"{key}.lora_down.weight"] = torch.randn(rank, layer.in_features, generator=gen) * 0.1
            out[f"{key}.lora_up.weight"] = torch.randn(layer.out_features, rank, generator=gen) * 0.1
            out[f"{key}.alpha"] = torch.tensor(float(rank))
            out[f"{key}.diff_b"] = torch.randn(layer.out_features, generator=gen) * 0.01
        for name in LORA_NORMS:  # published files carry these as zeros; diffusers drops them
            weight = modules[f"blocks.{i}"].get_submodule(_norm_path(name)).weight
            out[f"diffusion_model.blocks.{i}.{name}.diff"] = torch.zeros_like(weight)
        out[f"diffusion_model.blocks.{i}.diff_m"] = torch.zeros_like(transformer.blocks[i].scale_shift_table)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in out.items()}, str(path))
    return path


def _norm_path(original: str) -> str:
    return {"self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
            "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
            "cross_attn.norm_k_img": "attn2.norm_added_k", "norm3": "norm2"}[original]  # fmt: skip
