"""Prompt extension with a local vision-language model (Qwen2-VL / Qwen2.5-VL / Qwen3-VL family).

Loaded lazily once per model id and kept in host RAM; moved to the GPU only for a rewrite, after
checking free VRAM, then moved back so the video model gets the memory again.
We drive the tokenizer and image processor directly instead of AutoProcessor: the processor class
also builds a video processor, which needs torchvision (not a dependency of this project).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from wan_demo.core.settings import Settings
from wan_demo.prompt.text import (
    SYSTEM_PROMPT,
    BackendFailed,
    check_output,
    clean_output,
    downscale,
    user_message,
)

MAX_NEW_TOKENS = 320  # ~240 words; longer answers fail the length check anyway
VRAM_MARGIN = 1.3  # weights x this + 1 GiB must be free: activations and KV cache of ~1k tokens
GIB = 1024**3
IMAGE_TOKEN = "<|image_pad|>"  # Qwen-VL placeholder, expanded to one token per merged patch
# ChatML with the Qwen-VL image markers, for checkpoints whose tokenizer ships no chat template
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}"
    "{% else %}{% for c in m.content %}{% if c.type == 'image' %}<|vision_start|><|image_pad|>"
    "<|vision_end|>{% else %}{{ c.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class LocalVLM:
    source: str  # hub id or folder it was loaded from
    model: Any  # a transformers *ForConditionalGeneration, resting on the CPU between rewrites
    tokenizer: Any
    image_processor: Any
    weight_bytes: int


_cache: dict[str, LocalVLM] = {}
_lock = threading.Lock()  # one load at a time; rewrites share the one worker thread anyway


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def is_available(settings: Settings) -> tuple[bool, str]:
    """May auto mode try `local`? Needs a GPU and weights already on disk: auto never starts a
    multi-GB download inside a generation (prompt_extender=local does download on first use)."""
    if not cuda_available():
        return False, "no CUDA device (a VLM on CPU is too slow for the default)"
    if Path(settings.prompt_model).is_dir() or settings.prompt_model in _cache:
        return True, "local folder or already loaded"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(settings.prompt_model, "config.json"), str):
        return True, "in the Hugging Face cache"
    return False, f"{settings.prompt_model} not downloaded (hf download it, or set prompt_extender=local)"


def load_vlm(source: str, offline: bool = False) -> LocalVLM:
    """Load model, tokenizer and image processor from a hub id or a local folder, once."""
    with _lock:
        if source in _cache:
            return _cache[source]
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        local = offline or Path(source).is_dir()
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        image_processor = AutoImageProcessor.from_pretrained(source, local_files_only=local)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        vlm = LocalVLM(source, model.eval(), tokenizer, image_processor, weight_bytes)
        _cache[source] = vlm
        return vlm


def unload_all() -> None:
    """Drop cached VLMs (frees host RAM; used by tests and when memory is needed back)."""
    with _lock:
        _cache.clear()


def pick_device(vlm: LocalVLM) -> str:
    """'cuda' when free VRAM holds the weights with margin, else raise: the video model comes first."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    free, _total = torch.cuda.mem_get_info()
    need = vlm.weight_bytes * VRAM_MARGIN + GIB
    if free < need:
        raise BackendFailed(
            f"not enough free VRAM for the VLM ({free / GIB:.1f} GiB free, {need / GIB:.1f} needed)"
        )
    return "cuda"


def build_inputs(vlm: LocalVLM, prompt: str, image: Image.Image) -> dict:
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_message(prompt)}]},
    ]
    template = vlm.tokenizer.chat_template or FALLBACK_TEMPLATE
    text = vlm.tokenizer.apply_chat_template(
        messages, chat_template=template, add_generation_prompt=True, tokenize=False
    )
    pixels = vlm.image_processor(images=[downscale(image)], return_tensors="pt")
    per_image = int(pixels["image_grid_thw"][0].prod()) // vlm.image_processor.merge_size**2
    text = text.replace(IMAGE_TOKEN, IMAGE_TOKEN * per_image, 1)
    encoded = vlm.tokenizer([text], return_tensors="pt")
    image_token_id = vlm.model.config.image_token_id
    # 1 marks image positions: the model builds its 3-D (time, height, width) rotary positions from it
    mm_token_type_ids = (encoded["input_ids"] == image_token_id).int()
    return {**encoded, **pixels, "mm_token_type_ids": mm_token_type_ids}


def extend_with_vlm(prompt: str, image: Image.Image, settings: Settings) -> tuple[str, dict]:
    """Rewrite on the local VLM; returns (text, memory/timing facts for prompt_info)."""
    import torch

    vlm = load_vlm(settings.prompt_model, settings.offline)
    device = pick_device(vlm)
    inputs = {k: v.to(device) for k, v in build_inputs(vlm, prompt, image).items()}
    started = time.monotonic()
    try:
        vlm.model.to(device)
        with torch.inference_mode():
            output = vlm.model.generate(
                **inputs,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,  # deterministic rewrites; small VLMs drift when sampled
                max_time=settings.prompt_timeout_s,
                pad_token_id=vlm.tokenizer.pad_token_id,
            )
    finally:
        if device == "cuda":
            vlm.model.to("cpu")
            torch.cuda.empty_cache()
    seconds = time.monotonic() - started
    if seconds >= settings.prompt_timeout_s:
        raise BackendFailed(f"timeout after {settings.prompt_timeout_s:g} s (partial output discarded)")
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    raw = vlm.tokenizer.decode(new_tokens, skip_special_tokens=True)
    facts = {"device": device, "weights_gib": round(vlm.weight_bytes / GIB, 3), "new_tokens": len(new_tokens)}
    return check_output(prompt, clean_output(raw)), facts
