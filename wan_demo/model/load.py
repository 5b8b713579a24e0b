"""Load a single-file transformer (GGUF-quantized or a plain .safetensors in the original Wan key
layout) through diffusers' own `WanTransformer3DModel.from_single_file`, config from the model repo.

Settings.transformer_file is a local path or `owner/repo/path/in/repo.gguf` on the hub (e.g.
city96/Wan2.1-I2V-14B-480P-gguf/wan2.1-i2v-14b-480p-Q4_K_M.gguf). Every problem with the file
(missing, truncated, an unsupported quant type, shapes of another model) fails start-up with a
WeightsFileError naming the file; a parameter left on the meta device (diffusers issue #12009:
keys that did not map) is caught the same way instead of failing later inside offload hooks.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from wan_demo.core.settings import Settings
from wan_demo.model.gguf import WeightsFileError, check_against, read_state_dict

SUFFIXES = (".gguf", ".safetensors")


def resolve_file(source: str, offline: bool) -> str:
    """A local file, or `owner/repo/path/file` fetched into the hub cache (not when offline)."""
    if os.path.exists(source) or source.startswith((".", "/", "~")):
        return os.path.expanduser(source)
    parts = source.split("/")
    if len(parts) < 3:
        raise WeightsFileError(source, "not a local file, nor owner/repo/path/file.gguf on the hub")
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), local_files_only=offline)
    except Exception as e:  # hub errors come in many classes; all mean "cannot get the file"
        problem = f"cannot get it from the hub: {e.__class__.__name__}: {str(e)[:200]}"
        raise WeightsFileError(source, problem) from None


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".gguf"):
        return read_state_dict(path)
    if not path.endswith(".safetensors"):
        raise WeightsFileError(path, f"unknown file type: expected one of {', '.join(SUFFIXES)}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise WeightsFileError(path, "no such file")
    try:
        return load_file(path)  # memory-mapped by safetensors
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsFileError(path, f"not a complete safetensors file (truncated or corrupt: {e})") from None


def load_transformer_file(source: str, model: str, settings: Settings, device: str | None = None):
    """The transformer from `source`, its config from `model` (hub id or diffusers folder), its
    weights placed on `device` tensor by tensor (None: they stay in the file mapping, on the host).

    Where the time goes (bench/load.py, profiled on the 40-block files): building the module tree
    twice (once here to check the file's layout, once in diffusers), torch's weight initialisation
    on meta tensors that the file overwrites anyway, and page faults on the mapping afterwards. So:
    the layout is checked only when diffusers refuses the file or leaves weights unloaded (the
    check then names the problem), the module is built under diffusers' own `no_init_weights` (as
    its from_pretrained does), and a GGUF file's pages are read in the background meanwhile
    (model.gguf.prefetch)."""
    from diffusers import GGUFQuantizationConfig, WanTransformer3DModel
    from diffusers.models.modeling_utils import no_init_weights

    path = resolve_file(source, settings.offline)
    checkpoint = read_checkpoint(path)  # a GGUF file's pages start streaming in now
    dtype = getattr(torch, settings.dtype)
    local = os.path.isdir(model) or settings.offline
    config = WanTransformer3DModel.load_config(model, subfolder="transformer", local_files_only=local)
    quant = GGUFQuantizationConfig(compute_dtype=dtype) if path.endswith(".gguf") else None
    # no_init_weights: torch.nn.init is a no-op process-wide meanwhile (nothing else builds modules
    # while the model loads); a weight the file lacks stays on meta and is caught below.
    try:  # a copy: diffusers renames the keys of the dict it is given in place
        with no_init_weights():
            transformer = WanTransformer3DModel.from_single_file(
                dict(checkpoint), config=model, subfolder="transformer", quantization_config=quant,
                torch_dtype=dtype, local_files_only=local, device=device,
            )  # fmt: skip
    except (ValueError, RuntimeError, KeyError) as e:
        _check_layout(config, checkpoint, path)  # names wrong shapes, missing or unknown tensors
        raise WeightsFileError(path, f"diffusers could not load it: {str(e)[:300]}") from None
    on_meta = [n for n, p in transformer.named_parameters() if p.device.type == "meta"]
    if on_meta or _unknown(transformer, checkpoint):
        _check_layout(config, checkpoint, path)
        raise WeightsFileError(path, f"{len(on_meta)} weights were not loaded (still on meta): {on_meta[:3]}")
    transformer.weights_file = path  # for the banner and the metadata
    return transformer


def _unknown(transformer, checkpoint: dict[str, torch.Tensor]) -> list[str]:
    """Tensors of the file the loaded model has no place for (diffusers only warns about them)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    names = set(transformer.state_dict())
    if set(checkpoint) <= names:  # already diffusers' names
        return []
    return sorted(set(convert_wan_transformer_to_diffusers(dict(checkpoint))) - names)


def _check_layout(config: dict, checkpoint: dict[str, torch.Tensor], path: str) -> None:
    """Shapes and names against the config's model, built on the meta device (no memory)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    with init_empty_weights():
        model_state = WanTransformer3DModel.from_config(config).state_dict()
    converted = checkpoint  # already diffusers' names: from_single_file does not convert either
    if set(model_state) != set(checkpoint):
        converted = convert_wan_transformer_to_diffusers(dict(checkpoint))  # renames; a shallow copy
    check_against(model_state, converted, path)
