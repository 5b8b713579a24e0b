"""Run one 81-frame segment through diffusers' own sampler.

Progress, cancel and the live preview hook in through `callback_on_step_end`; sampling is never
re-implemented. An end frame goes in as diffusers' `last_image` (model/embed_cache.py makes its CLIP
tokens fit the I2V transformer); NAG swaps attn2's processor for the call (model/nag.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from wan_demo.core.plan import Nag, RunPlan
from wan_demo.core.request import GenerationCancelled, InvalidRequest
from wan_demo.core.settings import TEXT_TOKENS
from wan_demo.model.engine import Engine

LatentsFn = Callable[[Callable[[], np.ndarray]], None]  # on_latents(read): read() -> (16, F, H, W)


def set_shift(pipe, shift: float) -> None:
    """Swap in a scheduler with this flow shift when it differs (cheap: no weights)."""
    if pipe.scheduler.config.get("flow_shift") != shift:
        pipe.scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config, flow_shift=shift)


def segment_args(
    plan: RunPlan, image: Image.Image, prompt: str, last_image: Image.Image | None = None
) -> dict:
    """The pipeline arguments of one segment, as plain values (they cross to torchrun followers)."""
    args = dict(
        image=image, prompt=prompt, negative_prompt=plan.negative_prompt, width=plan.width,
        height=plan.height, num_frames=plan.frames_per_segment, steps=plan.steps,
        guidance=plan.guidance, shift=plan.shift,
    )  # fmt: skip
    extra = dict(last_image=last_image, nag=plan.nag)  # issue 24: only when used (torchrun: refused)
    return args | {k: v for k, v in extra.items() if v is not None}


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
    on_latents: LatentsFn | None = None,
    on_phase: Callable[[str], None] | None = None,
    last_image: Image.Image | None = None,
    nag: Nag | None = None,
) -> np.ndarray:
    """One pass of the pipeline; returns float32 frames (F, H, W, 3) in [0, 1] (diffusers' "np").

    `on_step(i)` runs after denoising step i (0-based) and may raise GenerationCancelled, which
    stops at once: the remaining steps and the VAE decode are skipped, the pipeline stays usable.
    `on_latents(read)` runs just before it; `read()` returns the current clean-latent estimate
    (see clean_latents), so a caller that skips a step pays nothing for it. Not under torchrun.
    `on_phase(name)` marks where the time goes (timing only; nothing numeric changes): "denoise" at
    the transformer's first forward (the text/image/VAE encoders ran before it), "decode" after the
    last step. Under torchrun the whole call counts as "denoise".
    `last_image`: the end frame (diffusers' first-last-frame conditioning); `nag`: NAG's numbers.
    """
    phase = on_phase or (lambda _name: None)
    if engine.parallel is not None and (last_image is not None or nag is not None):
        field = "last_image" if last_image is not None else "nag_scale"
        raise InvalidRequest(field, "is not supported on a multi-GPU (torchrun) server yet; leave it unset")
    if engine.parallel is not None:  # torchrun on several GPUs: every rank runs it (distributed.py)
        phase("denoise")
        args = dict(image=image, prompt=prompt, negative_prompt=negative_prompt, width=width, height=height,
                    num_frames=num_frames, steps=steps, guidance=guidance, shift=shift)  # fmt: skip
        return engine.parallel.lead_segment(engine, args, generator, on_step)
    pipe = engine.pipe
    set_shift(pipe, shift)

    def callback(_pipe, i: int, _t, kwargs: dict) -> dict:
        if on_latents is not None:
            latents = kwargs["latents"]
            on_latents(lambda: clean_latents(pipe, latents))
        on_step(i)
        if i == _pipe.num_timesteps - 1:
            phase("decode")
        return kwargs

    def first_forward(*_args) -> None:
        phase("denoise")
        hook.remove()

    cfg = guidance > 1.0
    embeds = engine.prompts.get(pipe, prompt, negative_prompt, cfg=cfg, nag=nag is not None)  # cached
    negative = embeds["negative_prompt_embeds"]
    if not cfg:  # without CFG a negative embedding is NAG's, never the sampler's
        embeds = dict(embeds, negative_prompt_embeds=None)
    hook = pipe.transformer.register_forward_pre_hook(first_forward)
    try:
        with _nag(pipe, negative, nag):
            frames = _call(pipe, image, last_image, embeds, height, width, num_frames, steps, guidance,
                           generator, callback)  # fmt: skip
    except GenerationCancelled:
        pipe.maybe_free_model_hooks()  # offload hooks stay consistent for the next run
        raise
    finally:
        hook.remove()  # idempotent
    return frames


def _nag(pipe, negative, nag: Nag | None):
    """NAG's processors for one call, or nothing (every processor stays as it is)."""
    if nag is None:
        return contextlib.nullcontext()
    from wan_demo.model.nag import nag_processors

    return nag_processors(pipe.transformer, negative, nag.scale, nag.tau, nag.alpha)


def _call(pipe, image, last_image, embeds, height, width, num_frames, steps, guidance, generator, callback):
    """diffusers' pipeline call; `last_image` only when given (a call without it stays today's)."""
    end = {} if last_image is None else {"last_image": last_image}
    return pipe(
        image=image,
        **end,
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


def clean_latents(pipe, latents) -> np.ndarray:
    """The denoiser's current estimate of the clean latents as float32 (16, F, H, W) on the CPU, in
    the pipeline's normalised latent space.

    Flow matching: x0 = x_t - sigma_t * v, with sigma_t the scheduler's sigma for the step just taken.
    diffusers' UniPCMultistepScheduler (Wan's) computes exactly that in step() (its predict_x0 form,
    `convert_model_output`) and keeps it as `model_outputs[-1]`; a scheduler without it falls back to
    the latents themselves (x at the next sigma: noisier, still the picture forming)."""
    outputs = getattr(pipe.scheduler, "model_outputs", None) or [None]
    x0 = outputs[-1]
    if x0 is None or not getattr(pipe.scheduler, "predict_x0", False) or x0.shape != latents.shape:
        x0 = latents
    return x0[0].detach().float().cpu().numpy()
