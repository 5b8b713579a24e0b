"""Put a memory plan onto a loaded pipeline: placement hooks, fp8 storage, VAE tiling.

Every strategy maps to diffusers' own mechanisms (model / group / sequential offload, layerwise
casting); nothing here moves tensors by hand except the small I/O hooks that let a text encoder
run on the CPU while the rest of the pipeline computes on the GPU.
"""

from __future__ import annotations

import torch

from wan_demo.model.memory.estimate import FP8_SKIP_PATTERNS
from wan_demo.model.memory.plan import Plan


def apply_plan(pipe, plan: Plan, device: str) -> None:
    s = plan.strategy
    if s.fp8:
        _store_fp8(pipe)
    if s.transformer == "offload":
        pipe.enable_model_cpu_offload(device=device)
    elif s.transformer.startswith("group_"):
        _group_offload(pipe, s.transformer.removeprefix("group_") + "_level", device)
    elif s.transformer == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:  # resident transformer; the text encoder may stay on the CPU
        pipe.to(device)
        if s.text_encoder == "cpu":
            run_on_cpu(pipe.text_encoder, device)
    if plan.vae_tiling:
        pipe.vae.enable_tiling()


def _store_fp8(pipe) -> None:
    """Weights of the transformer and the text encoder stored in float8_e4m3fn, upcast per layer."""
    from diffusers.hooks import apply_layerwise_casting

    # `.dtype`, not the first parameter's: Wan keeps scale_shift_table/norms in fp32 (_keep_in_fp32_modules),
    # and an fp32 compute dtype there makes the pipeline feed fp32 latents to the bf16 patch embedding.
    if not is_quantized(pipe.transformer):  # a GGUF transformer is already stored quantized
        compute = pipe.transformer.dtype
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
    compute = pipe.text_encoder.dtype
    apply_layerwise_casting(
        pipe.text_encoder,
        torch.float8_e4m3fn,
        compute,
        skip_modules_pattern=FP8_SKIP_PATTERNS["text_encoder"],
    )


def is_quantized(module: torch.nn.Module) -> bool:
    """Loaded from a GGUF file (diffusers attaches its quantizer)."""
    return getattr(module, "hf_quantizer", None) is not None


def _group_offload(pipe, transformer_level: str, device: str) -> None:
    """The transformer by block or leaf; the other models leaf by leaf (diffusers' Wan recipe)."""
    stream = device.startswith("cuda")  # CUDA streams prefetch the next group; they raise on CPU
    common = dict(onload_device=torch.device(device), offload_device=torch.device("cpu"), use_stream=stream)
    pipe.enable_group_offload(offload_type="leaf_level", exclude_modules=["transformer"], **common)
    blocks = 1 if transformer_level == "block_level" else None
    pipe.transformer.enable_group_offload(
        offload_type=transformer_level, num_blocks_per_group=blocks, **common
    )


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
    te = "fp8 e4m3 storage" if plan.strategy.fp8 else str(pipe.text_encoder.dtype).removeprefix("torch.")
    info = dict(
        transformer=kind, text_encoder=te + (" on the CPU" if plan.strategy.text_encoder == "cpu" else "")
    )
    if getattr(transformer, "weights_file", None):
        info["transformer_file"] = transformer.weights_file
        info.update(gguf.describe(transformer))
    return info
