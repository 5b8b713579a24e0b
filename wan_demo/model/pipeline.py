"""Load the Wan I2V pipeline once and run one 81-frame segment through diffusers' own sampler.

Progress and cancel hook in through `callback_on_step_end`; sampling is never re-implemented.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from wan_demo.core.settings import MAX_AREA, REAL_MODEL_ID, TEXT_TOKENS, Settings

log = logging.getLogger(__name__)

TINY_BANNER = (
    "No CUDA GPU or model weights: running the built-in TINY model with random weights. "
    "Its videos are noise; it exists to exercise the full pipeline. "
    f"Set WAN_DEMO_MODEL={REAL_MODEL_ID} (or a local folder) on a GPU host for real videos."
)


class GenerationCancelled(Exception):
    """Raised from the step callback when the caller asked to stop; no VAE decode runs."""


class ModelUnavailable(RuntimeError):
    """The requested weights cannot be loaded (not cached and no network, or a bad folder)."""


@dataclass
class Engine:
    """The one loaded pipeline and what callers need to know about it."""

    pipe: Any  # diffusers.WanImageToVideoPipeline
    model_name: str  # hub id, folder, or the tiny model's name
    is_tiny: bool
    device: str  # where sampling runs: "cuda:<index>" | "cpu"
    max_area: int  # output pixel budget (480*832 for the real model)
    memory_plan: str = "resident"  # human-readable strategy, shown in the UI banner
    fast_available: bool = False  # step-distilled LoRA loaded (fast mode possible)
    info: dict[str, Any] = field(default_factory=dict)  # versions, dtype, plan details
    parallel: Any = None  # distributed.Group on rank 0 of a multi-GPU torchrun run, else None

    @property
    def banner(self) -> str:
        text = TINY_BANNER if self.is_tiny else f"Model: {self.model_name} on {self.device}"
        return f"{text} | memory: {self.memory_plan}"


def choose_device(settings: Settings) -> str:
    import torch

    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":  # pin the index: diffusers' offload turns a bare "cuda" into GPU 0 on every rank
        device = f"cuda:{torch.cuda.current_device()}"
    return device


def wants_tiny(settings: Settings, device: str) -> bool:
    """Explicit setting wins; `auto` means the real model on CUDA and the tiny one elsewhere."""
    if settings.model == "tiny":
        return True
    return settings.model == "auto" and not device.startswith("cuda")


def load_engine(settings: Settings) -> Engine:
    """Load the pipeline once: tiny in-process model, or real weights from hub cache / folder."""
    import diffusers
    import torch
    import transformers

    from wan_demo.model import distributed, memory, speed_setup
    from wan_demo.model.memory_estimate import Shape

    device = choose_device(settings)
    if wants_tiny(settings, device):
        from wan_demo.model.tiny import TINY_MODEL_NAME, build_tiny_pipeline

        log.warning(TINY_BANNER)
        pipe = build_tiny_pipeline().to(device)
        engine = Engine(pipe, TINY_MODEL_NAME, True, device, settings.tiny_max_area)
    else:
        model = REAL_MODEL_ID if settings.model == "auto" else settings.model
        pipe = load_real_pipeline(model, settings)
        engine = Engine(pipe, model, False, device, MAX_AREA)
    pipe.set_progress_bar_config(disable=True)
    ranks, ranks_per_host = distributed.ranks_from_env()  # torchrun: GPUs sharing each segment
    plan = memory.apply_plan(pipe, settings, device, Shape(ranks=ranks), ranks_per_host)  # memory.py
    engine.memory_plan, engine.info["memory"] = plan.summary, plan.info()
    fast = speed_setup.setup(pipe, settings)  # LoRA, cache, attention backend, compile + warm-up
    engine.fast_available, engine.info["speed"] = fast.fast_available, fast.info()
    engine.info.update(
        torch=torch.__version__, diffusers=diffusers.__version__, transformers=transformers.__version__
    )
    return engine


def load_real_pipeline(model: str, settings: Settings):
    """diffusers' recipe: image encoder and VAE in fp32, transformer and text encoder in `dtype`."""
    import torch
    from diffusers import WanImageToVideoPipeline

    dtype = getattr(torch, settings.dtype)
    local = os.path.isdir(model)
    try:
        return WanImageToVideoPipeline.from_pretrained(
            model,
            dtype={"image_encoder": torch.float32, "vae": torch.float32, "default": dtype},
            local_files_only=settings.offline or local,
        )
    except (OSError, ValueError) as e:
        where = f"folder {model!r}" if local else f"hub repo {model!r}"
        raise ModelUnavailable(
            f"Cannot load the Wan I2V weights from {where}: {e.__class__.__name__}: {str(e)[:300]}\n"
            f"Get them with `hf download {REAL_MODEL_ID} --local-dir ./Wan2.1-I2V-14B-480P-Diffusers` "
            "and set WAN_DEMO_MODEL to that folder, or run with WAN_DEMO_MODEL=tiny for the built-in "
            "test model."
        ) from None


def set_shift(pipe, shift: float) -> None:
    """Swap in a scheduler with this flow shift when it differs (cheap: no weights)."""
    if pipe.scheduler.config.get("flow_shift") != shift:
        pipe.scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config, flow_shift=shift)


def run_segment(
    engine: Engine,
    *,
    image: Image.Image,
    prompt: str,
    negative_prompt: str,
    width: int,
    height: int,
    num_frames: int,
    steps: int,
    guidance: float,
    shift: float,
    generator,
    on_step: Callable[[int], None],
) -> np.ndarray:
    """One pass of the pipeline; returns float32 frames (F, H, W, 3) in [0, 1] (diffusers' "np").

    `on_step(i)` runs after denoising step i (0-based) and may raise GenerationCancelled, which
    stops at once: the remaining steps and the VAE decode are skipped, the pipeline stays usable.
    """
    if engine.parallel is not None:  # torchrun on several GPUs: every rank runs it (distributed.py)
        args = dict(image=image, prompt=prompt, negative_prompt=negative_prompt, width=width, height=height,
                    num_frames=num_frames, steps=steps, guidance=guidance, shift=shift)  # fmt: skip
        return engine.parallel.lead_segment(engine, args, generator, on_step)
    pipe = engine.pipe
    set_shift(pipe, shift)

    def callback(_pipe, i: int, _t, kwargs: dict) -> dict:
        on_step(i)
        return kwargs

    try:
        frames = pipe(
            image=image,
            prompt=prompt,
            negative_prompt=negative_prompt,
            height=height,
            width=width,
            num_frames=num_frames,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            output_type="np",
            max_sequence_length=TEXT_TOKENS,
            callback_on_step_end=callback,
        ).frames[0]
    except GenerationCancelled:
        pipe.maybe_free_model_hooks()  # offload hooks stay consistent for the next run
        raise
    return frames
