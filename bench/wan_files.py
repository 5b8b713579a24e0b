"""Write Wan transformers in the key layouts of the PUBLISHED files, for tests and benches.

- `write_transformer_files`: a WanTransformer3DModel as a single .safetensors (bf16) and as GGUF
  files (Q8_0, Q4_0, ... quantized with the `gguf` package) in the original Wan key layout that
  city96/Wan2.1-I2V-14B-480P-gguf uses (`blocks.0.self_attn.q.weight`, `head.modulation`, ...),
  with city96's per-tensor types (bench/gguf_files.py: the native 5-D F32 patch embedding, F32
  embeddings and head, block linears quantized).
- LoRAs in every published layout: bench/lora_files.py.

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
