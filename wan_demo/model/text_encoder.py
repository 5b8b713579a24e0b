"""The UMT5 text encoder, loaded straight into the dtype it is stored in (no bf16 staging) and onto
the device the plan gives it; for plans that do not keep it between prompts, loaded for an encode and
freed after it (the prompt-embedding cache makes that a new prompt's cost, model/text_cache.py).

The repo's text_encoder/ folder holds safetensors shards (fp32 in the Diffusers repo); each tensor is
read from its memory-mapped shard, cast to its storage dtype (float8_e4m3fn for the layers layerwise
casting stores in fp8, the compute dtype for the rest) and placed, so host memory holds the encoder
once plus one tensor in flight. Tensors above CHUNK_BYTES (the 2.1 GB shared embedding: 4.2 GB in
fp32) are read in row chunks. The tied `encoder.embed_tokens` is tied again, never loaded twice.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

SUBFOLDER = "text_encoder"
CHUNK_BYTES = 256 * 2**20  # a larger tensor is read and cast 256 MiB of rows at a time


def shard_files(model: str, local_only: bool) -> list[str]:
    """The text encoder's safetensors files, from a local folder or the hub cache / hub."""
    folder = Path(model) / SUBFOLDER
    if folder.is_dir():
        return _shards_in(folder)
    from huggingface_hub import snapshot_download

    root = snapshot_download(model, allow_patterns=[f"{SUBFOLDER}/*"], local_files_only=local_only)
    return _shards_in(Path(root) / SUBFOLDER)


def _shards_in(folder: Path) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [str(folder / n) for n in names]
    files = sorted(str(p) for p in folder.glob("*.safetensors"))
    if not files:
        raise OSError(f"no safetensors weights in {folder}")
    return files


def load_text_encoder(
    model: str, fp8: bool, device: str, compute_dtype: torch.dtype, local_only: bool,
    on_tensor: Callable[[str], None] | None = None,
):  # fmt: skip
    """A UMT5EncoderModel with its weights in their storage dtypes, on `device`."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open
    from transformers import UMT5Config, UMT5EncoderModel

    from wan_demo.model.memory.estimate import FP8_SKIP_PATTERNS
    from wan_demo.model.memory.sizes import fp8_castable_names

    folder = Path(model) / SUBFOLDER
    source = str(folder) if folder.is_dir() else model
    sub = {} if folder.is_dir() else {"subfolder": SUBFOLDER}
    config = UMT5Config.from_pretrained(source, local_files_only=local_only, **sub)
    with init_empty_weights():
        encoder = UMT5EncoderModel(config)
    castable = set(fp8_castable_names(encoder, FP8_SKIP_PATTERNS[SUBFOLDER])) if fp8 else set()
    tied = dict(getattr(encoder, "_tied_weights_keys", None) or {})  # alias -> source
    for path in shard_files(model, local_only):
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                if key in tied:
                    continue
                owner = key.rpartition(".")[0]
                dtype = torch.float8_e4m3fn if owner in castable else compute_dtype
                value = _read(f, key, dtype, compute_dtype)
                set_module_tensor_to_device(encoder, key, device, value=value, dtype=value.dtype)
                if on_tensor is not None:
                    on_tensor(key)
    for alias, target in tied.items():
        _tie(encoder, alias, target)
    missing = [n for n, p in encoder.named_parameters() if p.device.type == "meta"]
    if missing:
        raise OSError(f"text encoder weights missing from {source}: {missing[:3]}")
    return encoder.eval()


def _read(f, key: str, dtype: torch.dtype, via: torch.dtype) -> torch.Tensor:
    """One tensor cast to `dtype` through `via` (the compute dtype: fp8 weights round exactly as a
    compute-dtype load later cast to fp8 would); a large one row chunk by row chunk."""
    piece = f.get_slice(key)
    shape = piece.get_shape()
    element = torch.empty((), dtype=_dtype_of(piece.get_dtype())).element_size()
    total = element * (torch.Size(shape).numel())
    if total <= CHUNK_BYTES or len(shape) < 2:
        return f.get_tensor(key).to(via).to(dtype)
    out = torch.empty(shape, dtype=dtype)
    rows = max(1, CHUNK_BYTES // (total // shape[0]))
    for start in range(0, shape[0], rows):
        out[start : start + rows] = piece[start : start + rows].to(via).to(dtype)
    return out


def _dtype_of(name: str) -> torch.dtype:
    return {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}.get(name, torch.float32)


def _tie(module, alias: str, target: str) -> None:
    owner, _, name = alias.rpartition(".")
    source = module.get_parameter(target)
    setattr(module.get_submodule(owner), name, source)


def free(module) -> None:
    """Release every weight of a module (its hooks go with it once the caller drops it)."""
    module.to_empty(device="meta")


def storage_on_disk_gb(model: str) -> float:
    """Bytes of the text encoder's files in a local folder (0 when not local)."""
    folder = Path(model) / SUBFOLDER
    return sum(os.path.getsize(p) for p in folder.glob("*.safetensors")) / 1e9 if folder.is_dir() else 0.0


class OnDemand:
    """For plans that do not keep the text encoder: load it for an encode, place it as the plan
    says, free it after (model/text_cache.py calls `loaded`)."""

    def __init__(self, model: str, settings, plan, device: str):
        self.model, self.plan, self.device = model, plan, device
        self.dtype = getattr(torch, settings.dtype)
        self.local_only = settings.offline or os.path.isdir(model)
        self.loads = 0  # times the encoder was loaded (tests, info)

    def loaded(self, pipe):
        from contextlib import contextmanager

        @contextmanager
        def scope():
            from wan_demo.model.memory.apply import place_text_encoder, store_text_encoder_fp8

            layout = self.plan.layout
            fp8 = layout.fp8["text_encoder"]
            where = layout.placement["text_encoder"]
            encoder = load_text_encoder(self.model, fp8, self.device if where == "gpu" else "cpu",
                                        self.dtype, self.local_only)  # fmt: skip
            if fp8:
                store_text_encoder_fp8(encoder, self.dtype)
            place_text_encoder(encoder, where, self.device, lazy=True)
            self.loads += 1
            pipe.text_encoder = encoder
            try:
                yield encoder
            finally:
                pipe.text_encoder = None
                free(encoder)
                del encoder
                gc.collect()  # offload hooks and their modules reference each other: collect the cycle

        return scope()
