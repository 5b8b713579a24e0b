"""Put a memory plan onto a loaded pipeline: each component where its plan places it, fp8 storage,
pinning, VAE tiling.

Every strategy maps to diffusers' own mechanisms (model / group / sequential offload, layerwise
casting); nothing here moves tensors by hand except the small I/O hooks that let a text encoder run on
the CPU while the rest of the pipeline computes on the GPU. Components move one at a time (never the
whole pipe at once); a component with its own placement is excluded from the pipeline's group offload
(diffusers hooks every component it does not exclude). Lazy pinning is diffusers' `low_cpu_mem_usage`.
A text encoder the plan does not keep is absent here: `place_text_encoder` places each fresh copy.
"""

from __future__ import annotations

import torch

from wan_demo.model.memory.estimate import FP8_SKIP_PATTERNS
from wan_demo.model.memory.plan import Plan

GROUPS = ("group_block", "group_leaf")


def apply_plan(pipe, plan: Plan, device: str, compute_dtype: torch.dtype = torch.bfloat16) -> None:
    s, layout = plan.strategy, plan.layout
    if s.fp8:
        _store_fp8(pipe, compute_dtype)
    if s.transformer == "offload":
        pipe.enable_model_cpu_offload(device=device)
    elif s.transformer == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        lazy = layout.pinning == "lazy"
        others = [n for n in ("image_encoder", "vae") if getattr(pipe, n, None) is not None]
        if s.others in GROUPS:  # the pipeline's own recipe for the rest: leaf by leaf
            keep = ["transformer"] + (["text_encoder"] if s.text_encoder not in GROUPS else [])
            pipe.enable_group_offload(offload_type="leaf_level", exclude_modules=keep,
                                      **_group_args(device, lazy))  # fmt: skip
        else:
            for name in others:
                getattr(pipe, name).to(device)
        _place_transformer(pipe.transformer, s.transformer, device, lazy)
        covered = s.text_encoder in GROUPS and s.others in GROUPS  # by the pipeline's group offload
        if pipe.text_encoder is not None and not covered:
            place_text_encoder(pipe.text_encoder, s.text_encoder, device, lazy)
    if plan.vae_tiling:
        pipe.vae.enable_tiling()


def _group_args(device: str, lazy: bool) -> dict:
    stream = device.startswith("cuda")  # CUDA streams prefetch the next group; they raise on CPU
    return dict(onload_device=torch.device(device), offload_device=torch.device("cpu"), use_stream=stream,
                low_cpu_mem_usage=lazy)  # fmt: skip


def _place_transformer(transformer, placement: str, device: str, lazy: bool) -> None:
    if placement in GROUPS:
        blocks = 1 if placement == "group_block" else None
        level = placement.removeprefix("group_") + "_level"
        transformer.enable_group_offload(offload_type=level, num_blocks_per_group=blocks,
                                         **_group_args(device, lazy))  # fmt: skip
    elif placement == "gpu":
        transformer.to(device)


def place_text_encoder(encoder, placement: str, device: str, lazy: bool = True) -> None:
    """Put a text encoder where its plan places it: on the device, on the CPU (I/O hooks), or
    streamed leaf by leaf (diffusers' group offload; lazy pinning unless told otherwise)."""
    if placement == "gpu":
        encoder.to(device)
    elif placement == "cpu":
        run_on_cpu(encoder, device)
    elif placement in GROUPS:
        from diffusers.hooks import apply_group_offloading

        apply_group_offloading(encoder, offload_type="leaf_level", **_group_args(device, lazy))


def _store_fp8(pipe, compute_dtype: torch.dtype) -> None:
    """Weights of the transformer and the text encoder stored in float8_e4m3fn, upcast per layer. A
    text encoder loaded straight into fp8 (model/text_encoder.py) keeps its storage; the hooks give
    it `compute_dtype` (its own `.dtype` would read fp8)."""

    # `.dtype`, not the first parameter's: Wan keeps scale_shift_table/norms in fp32 (_keep_in_fp32_modules),
    # and an fp32 compute dtype there makes the pipeline feed fp32 latents to the bf16 patch embedding.
    if not is_quantized(pipe.transformer):  # a GGUF transformer is already stored quantized
        compute = pipe.transformer.dtype
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
    if pipe.text_encoder is not None:
        store_text_encoder_fp8(pipe.text_encoder, compute_dtype)


def store_text_encoder_fp8(encoder, compute_dtype: torch.dtype) -> None:
    from diffusers.hooks import apply_layerwise_casting

    compute = encoder.dtype if encoder.dtype.itemsize > 1 else compute_dtype
    apply_layerwise_casting(
        encoder, torch.float8_e4m3fn, compute, skip_modules_pattern=FP8_SKIP_PATTERNS["text_encoder"]
    )


def is_quantized(module: torch.nn.Module) -> bool:
    """Loaded from a GGUF file (diffusers attaches its quantizer)."""
    return getattr(module, "hf_quantizer", None) is not None


def run_on_cpu(module: torch.nn.Module, out_device: str) -> None:
    """Keep `module` on the CPU: move its inputs there and its outputs back to `out_device`.

    The pipeline creates token ids on its execution device (the GPU); these torch hooks bridge
    that without accelerate hooks, which would change the pipeline's execution device.
    """
    module.to("cpu")

    def inputs_to_cpu(_m, args, kwargs):
        return _to(args, "cpu"), _to(kwargs, "cpu")

    def outputs_to_device(_m, _args, _kwargs, output):
        return _to(output, out_device)

    module.register_forward_pre_hook(inputs_to_cpu, with_kwargs=True)
    module.register_forward_hook(outputs_to_device, with_kwargs=True)
    module._wan_demo_runs_on_cpu = True  # marker for tests and model info


def _to(value, device: str):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple) and not hasattr(value, "keys"):
        return tuple(_to(v, device) for v in value)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    if isinstance(value, dict):  # also transformers' ModelOutput (an OrderedDict)
        for k in list(value.keys()):
            value[k] = _to(value[k], device)
        return value
    return value


def weights_info(pipe, plan: Plan) -> dict:
    """What the weights are, for the banner and every video's metadata."""
    from wan_demo.model import gguf

    transformer = pipe.transformer
    if is_quantized(transformer):
        kind = f"{gguf.main_type(transformer)} (GGUF)"
    elif plan.strategy.fp8:
        kind = "fp8 e4m3 storage, bf16 compute"
    else:
        kind = str(transformer.dtype).removeprefix("torch.")
    if plan.strategy.fp8:
        te = "fp8 e4m3 storage"
    else:
        te = str(pipe.text_encoder.dtype if pipe.text_encoder is not None else "bf16").removeprefix("torch.")
    where = {"cpu": " on the CPU"}.get(plan.strategy.text_encoder, "")
    kept = "" if plan.layout.te_kept else ", loaded for each new prompt"
    info = dict(transformer=kind, text_encoder=te + where + kept)
    if getattr(transformer, "weights_file", None):
        info["transformer_file"] = transformer.weights_file
        info.update(gguf.describe(transformer))
    return info
