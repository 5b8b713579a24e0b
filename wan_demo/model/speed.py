"""Speed modes on the pipeline: the step-distilled fast LoRA and the step cache, per request.

The modes' numbers (steps, guidance, shift) live in core.plan. quality = 40 steps with CFG,
optionally with a step cache (FirstBlockCache, or MagCache with the published Wan2.1 I2V 480P
ratios: model/magcache.py); fast = the lightx2v step- and CFG-distilled LoRA, 4 steps, CFG off.
The LoRA is loaded once as an unfused adapter; `activate()` switches per request (adapter disabled
for quality, enabled for fast) and turns the step cache off in fast mode, where it would skip the
few steps that matter. Compile and attention backend: model.speed_setup.
"""

from __future__ import annotations

import logging
import os

from wan_demo.core.choices import CACHES
from wan_demo.core.settings import Settings
from wan_demo.model import magcache
from wan_demo.model.magcache import CALIBRATED_STEPS

log = logging.getLogger(__name__)

ADAPTER = "fast"  # peft adapter name of the step-distilled LoRA (= model/loras.FAST_ADAPTER: tested)
# Where to get the LoRA (pass as Settings.lora "owner/repo/path/in/repo.safetensors" or a local file)
LIGHTX2V_REPO = "lightx2v/Wan2.1-I2V-14B-480P-StepDistill-CfgDistill-Lightx2v"


# --- LoRA ---------------------------------------------------------------------------------------
# The LoRA stays an unfused peft adapter: enabled for fast mode, disabled for quality. Disabled,
# peft's layers call the base layer alone, so quality is bit-identical to a pipeline without the
# LoRA (unfusing bf16 weights left ~1/4 of them rounded); and fusing is impossible anyway on fp8
# storage (torch has no fp8 matmul for the delta) and on GGUF-quantized weights. Cost: the rank-r
# matmuls run beside each targeted layer (rank 64 on 5120-wide layers: ~2-3 % more FLOPs).
def load_fast_lora(pipe, source: str) -> None:
    """`source`: a local .safetensors file or folder, "owner/repo" or "owner/repo/path/file.safetensors".

    A file that is not a LoRA for this transformer fails start-up with one message naming it."""
    before = _lora_layers(pipe.transformer)
    try:
        with _loras().offload_paused(pipe):
            _load(pipe, source)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        raise ValueError(f"lora {source!r}: cannot load it onto this transformer: {str(e)[:300]}") from None
    if not has_fast_lora(pipe) or _lora_layers(pipe.transformer) == before:
        raise ValueError(f"lora {source!r}: none of its keys match this transformer (another model's LoRA?)")
    _loras().adapters_in_compute_dtype(pipe.transformer)


def _load(pipe, source: str) -> None:
    if os.path.exists(source):
        pipe.load_lora_weights(source, adapter_name=ADAPTER)
    elif len(parts := source.split("/")) > 2:
        pipe.load_lora_weights("/".join(parts[:2]), weight_name="/".join(parts[2:]), adapter_name=ADAPTER)
    else:
        pipe.load_lora_weights(source, adapter_name=ADAPTER)


def _lora_layers(module) -> int:
    return sum(1 for m in module.modules() if hasattr(m, "lora_A") and ADAPTER in getattr(m, "lora_A", {}))


def has_fast_lora(pipe) -> bool:
    adapters = pipe.get_list_adapters() if hasattr(pipe, "get_list_adapters") else {}
    return any(ADAPTER in names for names in adapters.values())


def lora_active(pipe) -> bool:
    """The fast adapter is enabled (fast mode's weights)."""
    if not _loras().adapters_enabled(pipe):
        return False
    layers = [m for m in _loras().tuner_layers(pipe.transformer) if ADAPTER in m.lora_A]
    return bool(layers) and ADAPTER in layers[0].active_adapters


def set_lora(pipe, fast: bool) -> None:
    """The fast adapter alone for fast mode, no adapter for quality (cheap: flags, no weight changes;
    community LoRAs are added by model/loras.py)."""
    _loras().activate(pipe, fast, [])


def _loras():
    """model/loras.py, imported when a LoRA is used: it imports torch, and this module is imported by
    the web server (model/distributed_group.py), which starts without torch."""
    from wan_demo.model import loras

    return loras


# --- step cache ---------------------------------------------------------------------------------
def cache_config(settings: Settings, steps: int = CALIBRATED_STEPS):
    """The diffusers cache config for Settings.cache at `steps` denoising steps, or None when off.
    MagCache: the published Wan2.1 I2V 480P ratios, interpolated to `steps` (model.magcache)."""
    if settings.cache not in CACHES:
        raise ValueError(f"cache {settings.cache!r}: must be one of {', '.join(CACHES)}")
    if settings.cache == "fbcache":
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=settings.cache_threshold)
    if settings.cache == "magcache":
        return magcache.config(settings, steps)
    return None


def set_cache(pipe, settings: Settings, on: bool, steps: int = CALIBRATED_STEPS) -> None:
    """Cache hooks on or off for the next run. MagCache's config depends on the step count, so a
    run with another count than the last one re-applies it; every run starts from a clean state
    (a run that failed half-way leaves its step counter and residuals behind)."""
    transformer = pipe.transformer
    wanted = (settings.cache, steps if settings.cache == "magcache" else None) if on else None
    applied = getattr(transformer, "wan_demo_cache", None) if transformer.is_cache_enabled else None
    if applied != wanted and transformer.is_cache_enabled:
        transformer.disable_cache()
    if wanted is not None and applied != wanted:
        transformer.enable_cache(cache_config(settings, steps))
    transformer.wan_demo_cache = wanted
    if wanted is not None:
        from diffusers.hooks import HookRegistry

        HookRegistry.check_if_exists_or_initialize(transformer).reset_stateful_hooks()


# --- per request --------------------------------------------------------------------------------
def activate(pipe, mode: str, settings: Settings, steps: int = CALIBRATED_STEPS) -> None:
    """Put the pipeline in speed mode `mode` ("quality" | "fast", from the run plan) for a run of
    `steps` denoising steps; cheap when it already is. The plan refused "fast" when no LoRA is loaded."""
    fast = mode == "fast"
    if has_fast_lora(pipe):
        set_lora(pipe, fast)
    set_cache(pipe, settings, on=settings.cache != "off" and not fast, steps=steps)
