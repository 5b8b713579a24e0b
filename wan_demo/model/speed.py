"""Speed modes: official quality sampling vs the step-distilled fast LoRA.

quality = 40 steps with CFG (2 transformer forwards per step), optionally with FirstBlockCache.
fast = the lightx2v step- and CFG-distilled LoRA: 4 steps, CFG off (1 forward per step).
The LoRA is loaded once and fused while fast mode is active; `activate()` switches per request
(unfuse + disable for quality, enable + fuse for fast) and turns the step cache off in fast mode,
where it would skip the few steps that matter. Compile and attention backend live in
wan_demo.speed_setup.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import Settings

log = logging.getLogger(__name__)

ADAPTER = "fast"  # peft adapter name of the step-distilled LoRA
# Where to get the LoRA (pass as Settings.lora "owner/repo/path/in/repo.safetensors" or a local file)
LIGHTX2V_REPO = "lightx2v/Wan2.1-I2V-14B-480P-StepDistill-CfgDistill-Lightx2v"
CACHES = ("off", "fbcache", "magcache")


@dataclass(frozen=True)
class SpeedMode:
    name: str
    steps: int  # denoising steps per 81-frame segment
    guidance: float  # CFG scale; 1.0 = CFG off (one transformer forward per step)
    shift: float  # scheduler flow shift


MODES = {
    "quality": SpeedMode("quality", steps=40, guidance=5.0, shift=3.0),  # official 480P defaults
    "fast": SpeedMode("fast", steps=4, guidance=1.0, shift=5.0),  # lightx2v distilled LoRA
}


def resolve(settings: Settings, requested: str | None, fast_available: bool) -> SpeedMode:
    """The mode for one request: request > setting > (fast when its LoRA is loaded, else quality)."""
    name = requested or (settings.speed_mode if settings.speed_mode != "auto" else None)
    if name is None:
        name = "fast" if fast_available else "quality"
    mode = MODES[name]
    return SpeedMode(
        name,
        steps=settings.steps or mode.steps,
        guidance=settings.guidance or mode.guidance,
        shift=settings.shift or mode.shift,
    )


def apply(pipe, settings: Settings) -> bool:
    """Load the fast LoRA / cache / compile / attention backend. Returns whether fast mode is possible."""
    from wan_demo.model.speed_setup import setup

    return setup(pipe, settings).fast_available


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
def activate(pipe, mode: SpeedMode, settings: Settings) -> None:
    """Put the pipeline in `mode` before a generation (cheap when it already is)."""
    fast = mode.name == "fast"
    if has_fast_lora(pipe):
        set_lora(pipe, fast)
    elif fast:
        raise InvalidRequest(
            "speed_mode",
            "'fast' needs the step-distilled LoRA (setting `lora`), which this server has not loaded; "
            "use 'quality'",
        )
    set_cache(pipe, settings, on=settings.cache != "off" and not fast)
