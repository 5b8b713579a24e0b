"""Write a full-size, random-weight Wan2.1 I2V 14B 480P model in the on-disk formats the app reads:
the Diffusers repo layout (model_index.json and one folder per component) and a city96 GGUF
transformer (bench/gguf_files.py). For bench/rehearsal.py; nothing here is model logic.

- text_encoder/: UMT5-XXL in fp32 safetensors shards of <= 5 GB with model.safetensors.index.json, as
  the Diffusers repo stores it (22.7 GB; a load log of this repo reports 21.16 GiB for it). Written
  tensor by tensor by a streaming safetensors writer, so memory holds one tensor at a time.
- image_encoder/ (CLIP ViT-H, fp32, 2.5 GB), vae/ (fp32, 0.5 GB), scheduler/, image_processor/,
  transformer/config.json (the GGUF file replaces its weights).
- tokenizer/: the built-in tiny test tokenizer (the real UMT5 sentencepiece model is not on this
  machine; the text encoder still runs its full 512-token context).
Weights are N(0, 0.02), norms 1: the sizes, dtypes, names and layouts are the real ones.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

SHARD_BYTES = 5 * 10**9  # the hub's shard size for this repo's text encoder
CHUNK_BYTES = 128 * 2**20  # random values are made and written this many bytes at a time
DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
PIPELINE_CLASSES = {
    "_class_name": "WanImageToVideoPipeline",
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "image_processor": ["transformers", "CLIPImageProcessor"],
    "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "WanTransformer3DModel"],
    "transformer_2": [None, None],
    "vae": ["diffusers", "AutoencoderKLWan"],
}


def random_like(name: str, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    if "norm" in name and len(shape) == 1:
        return torch.ones(shape, dtype=dtype)
    return (torch.randn(shape, generator=gen) * 0.02).to(dtype)


def write_safetensors_stream(path: Path, tensors: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype,
                             gen: torch.Generator) -> None:  # fmt: skip
    """A safetensors file written one tensor at a time: header first (offsets known from the shapes)."""
    size = torch.empty((), dtype=dtype).element_size()
    header, offset = {}, 0
    for name, shape in tensors:
        n = size * int(torch.Size(shape).numel())
        header[name] = {
            "dtype": DTYPE_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in tensors:
            rows = shape[0] if len(shape) > 1 else 1
            step = max(1, CHUNK_BYTES // max(1, size * int(torch.Size(shape).numel()) // rows))
            for start in range(0, rows, step):  # a large tensor a chunk of rows at a time
                part = (min(step, rows - start), *shape[1:]) if len(shape) > 1 else shape
                f.write(random_like(name, part, dtype, gen).contiguous().view(torch.uint8).numpy().data)


def write_text_encoder(folder: Path, seed: int = 0) -> int:
    """UMT5-XXL (5.68 B params) as fp32 shards + index; returns the bytes written."""
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    from wan_demo.model.memory.estimate import UMT5_CONFIG

    config = UMT5Config(**UMT5_CONFIG)
    config.architectures = ["UMT5EncoderModel"]
    with init_empty_weights():
        model = UMT5EncoderModel(config)
    tied = set(dict(getattr(model, "_tied_weights_keys", None) or {}))
    state = [(k, tuple(v.shape)) for k, v in model.state_dict().items() if k not in tied]
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, shape in state:
        n = 4 * int(torch.Size(shape).numel())
        if shards[-1] and used + n > SHARD_BYTES:
            shards.append([])
            used = 0
        shards[-1].append((name, shape))
        used += n
    gen, weight_map, total = torch.Generator().manual_seed(seed), {}, 0
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors_stream(folder / name, shard, torch.float32, gen)
        weight_map.update({k: name for k, _ in shard})
        total += (folder / name).stat().st_size
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return total


def write_model(folder: Path, seed: int = 0) -> Path:
    """Every component but the transformer's weights; returns the model folder."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from wan_demo.model.memory import estimate as e
    from wan_demo.model.tiny import SCHEDULER_CONFIG, build_tiny_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({**PIPELINE_CLASSES, "_diffusers_version": "0.42.1"}))
    _save_config(WanTransformer3DModel, e.TRANSFORMER_CONFIG, folder / "transformer")
    write_text_encoder(folder / "text_encoder", seed)
    torch.manual_seed(seed)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**e.CLIP_CONFIG)).eval()
    clip.save_pretrained(folder / "image_encoder", safe_serialization=True)
    del clip
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(
        folder / "image_processor"
    )
    AutoencoderKLWan(**e.VAE_CONFIG).eval().save_pretrained(folder / "vae", safe_serialization=True)
    UniPCMultistepScheduler(**SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    build_tiny_tokenizer().save_pretrained(folder / "tokenizer")
    return folder


def _save_config(cls, config: dict, folder: Path) -> None:
    """A component's config.json without building its weights (meta device)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        cls(**config).save_config(folder)
