"""Speed modes on the pipeline: the step-distilled fast LoRA and the step cache, per request.

The modes' numbers (steps, guidance, shift) live in core.plan. quality = 40 steps with CFG,
optionally with FirstBlockCache; fast = the lightx2v step- and CFG-distilled LoRA, 4 steps, CFG off.
The LoRA is loaded once and fused while fast mode is active; `activate()` switches per request
(unfuse + disable for quality, enable + fuse for fast) and turns the step cache off in fast mode,
where it would skip the few steps that matter. Compile and attention backend: model.speed_setup.
"""

from __future__ import annotations

import logging
import os

from wan_demo.core.settings import Settings

log = logging.getLogger(__name__)

ADAPTER = "fast"  # peft adapter name of the step-distilled LoRA
# Where to get the LoRA (pass as Settings.lora "owner/repo/path/in/repo.safetensors" or a local file)
LIGHTX2V_REPO = "lightx2v/Wan2.1-I2V-14B-480P-StepDistill-CfgDistill-Lightx2v"
CACHES = ("off", "fbcache", "magcache")


# --- LoRA ---------------------------------------------------------------------------------------
def load_fast_lora(pipe, source: str) -> None:
    """`source`: a local .safetensors file or folder, "owner/repo" or "owner/repo/path/file.safetensors"."""
    if os.path.exists(source):
        pipe.load_lora_weights(source, adapter_name=ADAPTER)
        return
    parts = source.split("/")
    if len(parts) > 2:
        pipe.load_lora_weights("/".join(parts[:2]), weight_name="/".join(parts[2:]), adapter_name=ADAPTER)
    else:
        pipe.load_lora_weights(source, adapter_name=ADAPTER)


def has_fast_lora(pipe) -> bool:
    adapters = pipe.get_list_adapters() if hasattr(pipe, "get_list_adapters") else {}
    return any(ADAPTER in names for names in adapters.values())


def lora_fused(pipe) -> bool:
    return getattr(pipe, "num_fused_loras", 0) > 0


def set_lora(pipe, fast: bool) -> None:
    """Fuse the LoRA for fast mode; unfuse and disable it for quality (else it still applies)."""
    if fast and not lora_fused(pipe):
        pipe.enable_lora()
        pipe.fuse_lora(components=["transformer"], lora_scale=1.0, adapter_names=[ADAPTER])
    elif not fast and lora_fused(pipe):
        pipe.unfuse_lora(components=["transformer"])
        pipe.disable_lora()


# --- step cache ---------------------------------------------------------------------------------
def cache_config(settings: Settings):
    """The diffusers cache config for Settings.cache, or None when off."""
    if settings.cache not in CACHES:
        raise ValueError(f"cache {settings.cache!r}: must be one of {', '.join(CACHES)}")
    if settings.cache == "fbcache":
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=settings.cache_threshold)
    if settings.cache == "magcache":
        raise ValueError(
            "cache 'magcache': needs calibrated mag_ratios for Wan2.1 I2V and none are shipped; "
            "use cache=fbcache"
        )
    return None


def set_cache(pipe, settings: Settings, on: bool) -> None:
    transformer = pipe.transformer
    if on and not transformer.is_cache_enabled:
        transformer.enable_cache(cache_config(settings))
    elif not on and transformer.is_cache_enabled:
        transformer.disable_cache()


# --- per request --------------------------------------------------------------------------------
def activate(pipe, mode: str, settings: Settings) -> None:
    """Put the pipeline in speed mode `mode` ("quality" | "fast", from the run plan) before a
    generation; cheap when it already is. The plan refused "fast" when no LoRA is loaded."""
    fast = mode == "fast"
    if has_fast_lora(pipe):
        set_lora(pipe, fast)
    set_cache(pipe, settings, on=settings.cache != "off" and not fast)
