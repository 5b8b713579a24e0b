"""Run one 81-frame segment through diffusers' own sampler.

Progress and cancel hook in through `callback_on_step_end`; sampling is never re-implemented.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from wan_demo.core.plan import RunPlan
from wan_demo.core.request import GenerationCancelled
from wan_demo.core.settings import TEXT_TOKENS
from wan_demo.model.engine import Engine


def set_shift(pipe, shift: float) -> None:
    """Swap in a scheduler with this flow shift when it differs (cheap: no weights)."""
    if pipe.scheduler.config.get("flow_shift") != shift:
        pipe.scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config, flow_shift=shift)


def segment_args(plan: RunPlan, image: Image.Image, prompt: str) -> dict:
    """The pipeline arguments of one segment, as plain values (they cross to torchrun followers)."""
    return dict(
        image=image, prompt=prompt, negative_prompt=plan.negative_prompt, width=plan.width,
        height=plan.height, num_frames=plan.frames_per_segment, steps=plan.steps,
        guidance=plan.guidance, shift=plan.shift,
    )  # fmt: skip


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

    embeds = engine.prompts.get(pipe, prompt, negative_prompt, cfg=guidance > 1.0)  # cached per prompt
    try:
        frames = pipe(
            image=image,
            **embeds,
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
