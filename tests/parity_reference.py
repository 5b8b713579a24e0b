"""The reference side of tests/test_parity.py: a plain diffusers WanImageToVideoPipeline call.

Written from the documentation (docs/architecture.md "How a generation flows" and
docs/gpu-and-memory.md "Speed modes", the diffusers Wan I2V example, the model card), never from
wan_demo: nothing here imports wan_demo, so a change in our wiring cannot change the reference with
it. The defaults below are the documented ones; test_parity asserts that the docs state them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

DOCS = Path(__file__).resolve().parents[1] / "docs"
FLOW_PAGE = DOCS / "architecture.md"  # "How a generation flows": size rule, default negative prompt

MAX_AREA_480P = 480 * 832  # pixel budget of the 480P model
SIZE_MULTIPLE = 16  # VAE spatial factor 8 x transformer patch 2
SEGMENT_FRAMES = 81  # one pass: the training length, 5.06 s at 16 fps
TEXT_TOKENS = 512  # max_sequence_length: Wan's attention assumes exactly 512 text tokens
FBCACHE_THRESHOLD = 0.05  # docs: FirstBlockCache default threshold
# MagCache (docs/speed.md): the authors' published Wan2.1 I2V 480P magnitude ratios, calibrated at
# 40 steps with CFG, one per transformer call, conditional and unconditional interleaved
# (github.com/Zehong-Ma/MagCache MagCache4Wan2.1/magcache_generate.py, commit e1862e0, line 1002),
# and the authors' defaults: threshold 0.12, K (max skipped steps in a row) 2, retention 0.2.
MAGCACHE_I2V_480P = [
    1.0, 1.0, 0.98783, 0.98993, 0.97559, 0.97593, 0.98311, 0.98319, 0.98202, 0.98225, 0.9888, 0.98878,
    0.98762, 0.98759, 0.98957, 0.98971, 0.99052, 0.99043, 0.99383, 0.99384, 0.98857, 0.9886, 0.99065,
    0.99068, 0.98845, 0.98847, 0.99057, 0.99057, 0.98957, 0.98961, 0.98601, 0.9861, 0.98823, 0.98823,
    0.98756, 0.98759, 0.98808, 0.98814, 0.98721, 0.98724, 0.98571, 0.98572, 0.98543, 0.98544, 0.98157,
    0.98165, 0.98411, 0.98413, 0.97952, 0.97953, 0.98149, 0.9815, 0.9774, 0.97742, 0.97825, 0.97826,
    0.97355, 0.97361, 0.97085, 0.97087, 0.97056, 0.97055, 0.96588, 0.96587, 0.96113, 0.96124, 0.9567,
    0.95681, 0.94961, 0.94969, 0.93973, 0.93988, 0.93217, 0.93224, 0.91878, 0.91896, 0.90955, 0.90954,
    0.92617, 0.92616,
]  # fmt: skip
MAGCACHE = dict(threshold=0.12, max_skip_steps=2, retention_ratio=0.2)
# diffusers' Wan I2V recipe: CLIP image encoder and VAE in fp32, the rest in bf16
DTYPES = {"image_encoder": torch.float32, "vae": torch.float32, "default": torch.bfloat16}


@dataclass(frozen=True)
class Mode:
    steps: int
    guidance: float
    shift: float


QUALITY = Mode(steps=40, guidance=5.0, shift=3.0)  # official 480P sampling
FAST = Mode(steps=4, guidance=1.0, shift=5.0)  # lightx2v step+CFG-distilled LoRA, loaded


def fit_size(width: int, height: int, max_area: int) -> tuple[int, int]:
    """The official Wan size rule: keep the aspect ratio inside `max_area` at multiples of 16.

    side = round(sqrt(max_area * ratio)) // 16 * 16, with ratio = height / width for the height
    and width / height for the width.
    """
    ratio = height / width
    out_h = round(math.sqrt(max_area * ratio)) // SIZE_MULTIPLE * SIZE_MULTIPLE
    out_w = round(math.sqrt(max_area / ratio)) // SIZE_MULTIPLE * SIZE_MULTIPLE
    return out_w, out_h


def resize(image: Image.Image, max_area: int) -> Image.Image:
    """Cover the fitted size and centre-crop the rounding pixels, Lanczos (no distortion)."""
    return ImageOps.fit(image, fit_size(*image.size, max_area), method=Image.Resampling.LANCZOS)


def to_pixels(frame: np.ndarray) -> np.ndarray:
    """A decoded float32 frame in [0, 1] as the 8-bit pixels of the video: x * 255 rounded half up,
    in float32 (the frame's own precision; float64 would round a few values differently)."""
    return np.clip(frame * np.float32(255.0) + np.float32(0.5), 0.0, 255.0).astype(np.uint8)


def documented_negative_prompt() -> str:
    """The default negative prompt as the docs state it (the ```text block of its bullet)."""
    text = FLOW_PAGE.read_text()
    block = re.search(r"\*\*Negative prompt\*\*.*?```text\n(.*?)```", text, flags=re.S)
    assert block, f"{FLOW_PAGE.name} documents no default negative prompt"
    return " ".join(line.strip() for line in block.group(1).strip().splitlines())


def load(folder: str | Path, mode: Mode, lora: Path | None = None, cache: bool | str = False):
    """from_pretrained with the documented dtypes, UniPC at the mode's shift, LoRA, cache (True or
    "fbcache": FirstBlockCache; "magcache": diffusers' MagCache hook with the published ratios).

    The LoRA as `load_lora_weights` leaves it (a peft adapter; diffusers documents `fuse_lora` as an
    optional speed-up): docs/gpu-and-memory.md "Speed modes" says the app keeps it unfused."""
    from diffusers import (
        FirstBlockCacheConfig,
        MagCacheConfig,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
    )

    pipe = WanImageToVideoPipeline.from_pretrained(folder, dtype=DTYPES)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=mode.shift)
    if lora is not None:
        pipe.load_lora_weights(lora)
    if cache == "magcache":  # one ratio list for both CFG branches: the conditional column
        config = MagCacheConfig(
            mag_ratios=MAGCACHE_I2V_480P[0::2], num_inference_steps=mode.steps, **MAGCACHE
        )
        pipe.transformer.enable_cache(config)
    elif cache:
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=FBCACHE_THRESHOLD))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(
    pipe, image: Image.Image, prompt: str, negative_prompt: str, mode: Mode, generator,
    last_image: Image.Image | None = None,
) -> np.ndarray:  # fmt: skip
    """One 81-frame pass at the image's size; float32 frames (F, H, W, 3) in [0, 1]. With
    `last_image`: diffusers' first-last-frame call (see end_frame_clip_tokens)."""
    end = {} if last_image is None else {"last_image": last_image}
    return pipe(
        image=image,
        **end,
        prompt=prompt,
        negative_prompt=negative_prompt,
        height=image.height,
        width=image.width,
        num_frames=SEGMENT_FRAMES,
        num_inference_steps=mode.steps,
        guidance_scale=mode.guidance,
        generator=generator,
        output_type="np",
        max_sequence_length=TEXT_TOKENS,
    ).frames[0]


def generator(seed: int) -> torch.Generator:
    """Noise drawn on the CPU (same frames on any device), one generator for the whole clip."""
    return torch.Generator("cpu").manual_seed(seed)


def write_lora(folder: str | Path, out: Path) -> Path:
    """A random rank-4 LoRA on the tiny transformer's attention and FFN projections (the layers
    lightx2v's LoRA targets), saved in the diffusers/peft layout `load_lora_weights` reads
    (bench/lora_files.py writes every layout)."""
    from diffusers import WanTransformer3DModel

    from bench.lora_files import write_peft

    transformer = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer")
    targets = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
    return write_peft(transformer, out, targets, name="fast", seed=1)


def end_frame_clip_tokens(pipe) -> None:
    """The end-frame recipe for the 480P I2V transformer, from ComfyUI's WanFirstLastFrameToVideo
    (comfy_extras/nodes_wan.py): the start and end images' CLIP penultimate hidden states joined on
    the token axis. diffusers 0.42.1 instead asks encode_image for a batch of two, which only the
    FLF2V transformer (image position embedding) folds into one sequence; this transformer has
    none and the call fails. So encode_image, given the pair, returns (1, 2 x tokens, dim)."""
    single = pipe.encode_image

    def encode_image(image, device=None):
        if isinstance(image, list):
            return torch.cat([single(one, device) for one in image], dim=1)
        return single(image, device)

    pipe.encode_image = encode_image


# --- community LoRAs (tests/test_lora_parity.py) ---------------------------------------------------
# fp8 storage as diffusers documents it (enable_layerwise_casting); the text encoder keeps T5's
# embeddings, norms, relative attention bias and `wo` (whose input transformers casts to wo's dtype).
T5_FP8_SKIP = ("shared", "embed_tokens", "layer_norm", "relative_attention_bias", r"\.wo$")


def load_gguf(folder: str | Path, gguf_file: str | Path, mode: Mode):
    """The pipeline with its transformer from a GGUF file (diffusers' from_single_file recipe). Files
    in city96's layout store the 5-D patch embedding as 4-D with its shape under
    `comfy.gguf.orig_shape.<name>` (ComfyUI-GGUF's convention), which diffusers' reader does not
    apply: the reference reshapes it (what city96's fix_5d_tensors.py describes)."""
    import gguf
    from diffusers import GGUFQuantizationConfig, WanImageToVideoPipeline, WanTransformer3DModel
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    state = load_gguf_checkpoint(str(gguf_file))
    for name, field in gguf.GGUFReader(str(gguf_file)).fields.items():
        if name.startswith("comfy.gguf.orig_shape."):
            key = name.removeprefix("comfy.gguf.orig_shape.")
            state[key] = state[key].reshape(tuple(int(field.parts[i][0]) for i in field.data))
    transformer = WanTransformer3DModel.from_single_file(
        state, quantization_config=GGUFQuantizationConfig(compute_dtype=torch.bfloat16),
        config=str(folder), subfolder="transformer", torch_dtype=torch.bfloat16,
    )  # fmt: skip
    pipe = WanImageToVideoPipeline.from_pretrained(folder, transformer=transformer, dtype=DTYPES)
    return _with_mode(pipe, mode)


def store_fp8(pipe) -> None:
    """Transformer and text encoder weights stored in float8_e4m3fn, computed in bf16."""
    from diffusers.hooks import apply_layerwise_casting

    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    apply_layerwise_casting(pipe.text_encoder, torch.float8_e4m3fn, torch.bfloat16, T5_FP8_SKIP)


def add_loras(pipe, loras: list[tuple[Path, float]], fast: Path | None = None) -> None:
    """diffusers' multi-adapter recipe: each file as a named adapter (`load_lora_weights`), then one
    `set_adapters(names, weights)`, the fast LoRA first at weight 1."""
    files = ([(fast, 1.0)] if fast else []) + list(loras)
    names = [f"adapter{i}" for i in range(len(files))]
    for name, (path, _) in zip(names, files, strict=True):
        pipe.load_lora_weights(path, adapter_name=name)
        _adapter_in_bf16(pipe, name, path)
    pipe.set_adapters(names, adapter_weights=[scale for _, scale in files])


def _adapter_in_bf16(pipe, name: str, path: Path) -> None:
    """Under fp8 storage peft stores an adapter in its base layer's float8 (torch has no fp8 matmul,
    and 3 mantissa bits round the LoRA): give it its file's values back, in bf16."""
    from diffusers import WanImageToVideoPipeline

    params = {n: p for n, p in pipe.transformer.named_parameters() if f".{name}." in n}
    if not any(p.dtype.itemsize == 1 for p in params.values()):
        return
    for key, value in WanImageToVideoPipeline.lora_state_dict(str(path)).items():
        module, _, kind = key.removeprefix("transformer.").partition(".lora_")
        side, _, leaf = kind.partition(".")
        if f"{module}.lora_{side}.{name}.{leaf}" in params:
            params[f"{module}.lora_{side}.{name}.{leaf}"].data = value.to(torch.bfloat16)
    for param in params.values():  # what the file does not hold (zeros diffusers added)
        param.data = param.data.to(torch.bfloat16)


def _with_mode(pipe, mode: Mode):
    from diffusers import UniPCMultistepScheduler

    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=mode.shift)
    pipe.set_progress_bar_config(disable=True)
    return pipe
