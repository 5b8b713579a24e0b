"""Merge-on-load: a LoRA set a worker keeps using, added into the weights, the originals kept.

Unfused adapters cost a rank-r matmul beside every targeted layer per step, on top of each GGUF
layer's dequantization; ComfyUI-GGUF users report up to ~3x slower steps with four LoRAs (its issue
#36, published). Merged, a step costs what the base model's does. Per targeted layer: dequantize the
weight, add sum(scale * alpha/r * B @ A) (and the bias deltas) in float32, store it back:
- GGUF: requantized with gguf-py's quantizer (gguf 0.19 quantizes Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16,
  BF16; not the K-quants). A K-quant layer goes to the nearest maintained type at or above its
  precision (REQUANT: Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), which takes more
  bytes (`growth`, counted by the memory planner through model/loras.memory_terms);
- fp8 storage (layerwise casting): cast back to float8_e4m3fn (saturated at its +-448 range);
- bf16 / fp32: cast back to the layer's dtype.
The original tensors are kept (on the CPU when the weights live on a GPU) and put back exactly when
another set is asked for. Never under group or sequential offload: their hooks keep their own copies
of the weights (diffusers' pinned CPU copies), so an in-place change would not reach the GPU.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

REQUANT = {"Q8_0": "Q8_0", "Q5_1": "Q5_1", "Q5_0": "Q5_0", "Q4_1": "Q4_1", "Q4_0": "Q4_0",
           "Q6_K": "Q8_0", "Q5_K": "Q5_1", "Q4_K": "Q5_0", "Q3_K": "Q4_0", "Q2_K": "Q4_0"}  # fmt: skip
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def merge_possible(strategy) -> bool:
    """Merging changes weights in place: not under group or sequential offload (see the docstring)."""
    return not (strategy.transformer.startswith("group_") or strategy.transformer == "sequential")


def requant_type(name: str) -> str:
    if name not in REQUANT:
        raise ValueError(f"no maintained quantizer for GGUF type {name}")
    return REQUANT[name]


def bytes_per_weight(name: str) -> float:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
    return size / block


def growth(weights: str) -> float:
    """Extra bytes, as a share of the layer, when a layer stored as `weights` (a GGUF type or mix
    name such as Q4_K_M; bf16/fp8: 0) is merged and requantized."""
    kind = next((k for k in REQUANT if weights.startswith(k)), None)
    if kind is None:
        return 0.0
    return bytes_per_weight(REQUANT[kind]) / bytes_per_weight(kind) - 1.0


@dataclass
class Merged:
    key: tuple  # ((adapter name, scale), ...) that was merged
    applied: str  # for the metadata, e.g. "merged into Q8_0 weights"
    saved: list = field(default_factory=list)  # (base layer, weight data, quant type, bias data)
    seconds: float = 0.0


def _deltas(layer, names: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum over the adapters of scaling * B @ A (float32) and of scaling * B.bias; `scaling` is peft's
    alpha/r times the weight set_adapters gave the adapter."""
    weight = bias = None
    for name in names:
        a, b, scaling = (
            layer.lora_A[name].weight.float(),
            layer.lora_B[name].weight.float(),
            layer.scaling[name],
        )
        weight = (b @ a) * scaling if weight is None else weight + (b @ a) * scaling
        if layer.lora_B[name].bias is not None:
            db = layer.lora_B[name].bias.float() * scaling
            bias = db if bias is None else bias + db
    return weight, bias


def _merge_layer(base, delta: torch.Tensor, bias: torch.Tensor | None) -> tuple:
    """Store W + delta in the layer's own format; returns what to put back and the stored type."""
    param = base.weight
    original = (
        base,
        param.data,
        getattr(param, "quant_type", None),
        None if base.bias is None else base.bias.data,
    )
    quant = getattr(param, "quant_type", None)
    if quant is not None:
        import gguf
        from diffusers.quantizers.gguf.utils import _quant_shape_from_byte_shape, dequantize_gguf_tensor

        merged = dequantize_gguf_tensor(param).float() + delta.to(param.device)
        target = gguf.GGMLQuantizationType[requant_type(quant.name)]
        packed = torch.from_numpy(gguf.quants.quantize(merged.cpu().numpy(), target)).to(param.device)
        param.data, param.quant_type = packed, target
        block, size = gguf.GGML_QUANT_SIZES[target]
        param.quant_shape = _quant_shape_from_byte_shape(packed.shape, size, block)
        kind = target.name
    else:
        merged = param.data.float() + delta.to(param.device)
        if param.dtype.itemsize == 1:  # float8 storage: stay inside its finite range
            merged = merged.clamp(-FP8_MAX, FP8_MAX)
        param.data, kind = merged.to(param.dtype), str(param.dtype).removeprefix("torch.")
    if bias is not None:
        base.bias.data = (base.bias.data.float() + bias.to(base.bias.device)).to(base.bias.dtype)
    return _offloaded(original), kind


def _offloaded(original: tuple) -> tuple:
    """Originals of GPU weights wait on the CPU (they are only needed to switch back)."""
    base, data, quant, bias = original
    if data.is_cuda:
        data, bias = data.to("cpu"), None if bias is None else bias.to("cpu")
    return base, data, quant, bias


def tuner_layers(module: torch.nn.Module) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


@torch.no_grad()
def merge(transformer, chosen: list[tuple[str, float]]) -> Merged:
    """Add the adapters `chosen` (already activated at their weights) into the weights they target."""
    started, names = time.perf_counter(), [name for name, _ in chosen]
    merged, kinds = Merged(tuple(chosen), ""), Counter()
    for layer in tuner_layers(transformer):
        present = [name for name in names if name in layer.lora_A]
        if present:
            weight, bias = _deltas(layer, present)
            original, kind = _merge_layer(layer.get_base_layer(), weight, bias)
            merged.saved.append(original)
            kinds[kind] += 1
    merged.applied = "merged into " + ", ".join(f"{k} weights" for k, _ in kinds.most_common())
    merged.seconds = time.perf_counter() - started
    log.info(
        "LoRA set merged into %d layers in %.1f s (%s)", len(merged.saved), merged.seconds, merged.applied
    )
    return merged


@torch.no_grad()
def unmerge(merged: Merged) -> None:
    """Put every original tensor back (exactly: the same bytes)."""
    for base, data, quant, bias in merged.saved:
        param = base.weight
        param.data = data.to(param.device)
        if quant is not None:
            import gguf
            from diffusers.quantizers.gguf.utils import _quant_shape_from_byte_shape

            block, size = gguf.GGML_QUANT_SIZES[quant]
            param.quant_type, param.quant_shape = quant, _quant_shape_from_byte_shape(data.shape, size, block)
        if bias is not None:
            base.bias.data = bias.to(base.bias.device)
    merged.saved.clear()


class Merger:
    """Merge a set once it ran `after` times in a row (0 = never); unmerge when another is asked for."""

    def __init__(self, after: int):
        self.after, self.merged = after, None
        self._streak: tuple[tuple, int] = ((), 0)

    def update(self, pipe, chosen: list[tuple[str, float]]) -> dict[str, str]:
        """{adapter name: how it was applied} for the adapters now merged (the rest stay unfused)."""
        key = tuple(chosen)
        if self.merged is not None and self.merged.key != key:
            unmerge(self.merged)
            self.merged = None
        if self.after <= 0 or not chosen:
            return {}
        streak = self._streak[1] + 1 if self._streak[0] == key else 1
        self._streak = (key, streak)
        if self.merged is None and streak >= self.after:
            self.merged = merge(pipe.transformer, chosen)
        return {name: self.merged.applied for name, _ in chosen} if self.merged is not None else {}
