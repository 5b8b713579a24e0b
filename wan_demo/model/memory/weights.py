"""Weight formats of the transformer the planner can choose between, and the start-up check that
names the nearest one that would fit when nothing does.

bf16 is the repo's; fp8 is layerwise-casting storage (plan.Strategy.fp8); the GGUF types are files
(Settings.transformer_file) from city96/Wan2.1-I2V-14B-480P-gguf. A GGUF transformer's size is
exact, tensor by tensor: read from the file's header when the file is on disk, else computed from
city96's per-tensor types (model/gguf_layout.py), which reproduce the published sizes within 0.4 %.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from wan_demo.model import gguf_layout
from wan_demo.model.memory.sizes import ComponentSize, gguf_size

GGUF_REPO = "city96/Wan2.1-I2V-14B-480P-gguf"


# city96's file sizes as listed on the hub (GB), published by city96 (FIELD-NOTES): the check on
# gguf_layout's computed sizes (tests/test_gguf_kquants.py) and the doctor's download sizes.
PUBLISHED_GB = {"Q8_0": 18.1, "Q5_0": 12.3, "Q4_K_M": 11.3, "Q3_K_M": 8.6}


@dataclass(frozen=True)
class Weights:
    name: str  # as in file names: "Q4_K_M"
    quality: str  # the cost, said plainly
    speed: float  # per-forward speed vs bf16 on a GPU (estimate: dequantize per layer per forward)

    @property
    def file(self) -> str:
        return f"{GGUF_REPO}/{self.filename}"

    @property
    def filename(self) -> str:
        return f"wan2.1-i2v-14b-480p-{self.name}.gguf"

    @property
    def file_gb(self) -> float:
        """The file's size: computed from city96's per-tensor types (within 0.4 % of the published)."""
        return transformer_size(self.name).weights_gb()


# Best quality first; the planner takes the first that fits.
GGUF_WEIGHTS = (
    Weights("Q8_0", "near-lossless (8-bit blocks)", 0.95),
    Weights("Q6_K", "very small loss", 0.93),
    Weights("Q5_K_M", "small loss: slightly softer fine detail", 0.93),
    Weights("Q4_K_M", "visible loss: Q4 loses fine detail and texture", 0.92),
    Weights("Q3_K_M", "clear loss: soft detail, more artefacts and flicker", 0.90),
)
BY_NAME = {w.name: w for w in GGUF_WEIGHTS}
PLAIN_QUALITY = {"bf16": "reference", "fp8": "small loss (e4m3: 3 mantissa bits per weight)"}


def weights_for_file(quant_type: str) -> Weights:
    """The Weights of a loaded GGUF file from its main tensor type (Q4_K -> Q4_K_M, Q8_0 -> Q8_0)."""
    for w in GGUF_WEIGHTS:
        if w.name.startswith(quant_type):
            return w
    return Weights(quant_type, "quantized", 0.92)


def quality_of(weights: str) -> str:
    if weights in PLAIN_QUALITY:
        return PLAIN_QUALITY[weights]
    return BY_NAME[weights].quality if weights in BY_NAME else "quantized"


@functools.lru_cache(maxsize=16)
def transformer_size(ftype: str) -> ComponentSize:
    """The real transformer as a city96 GGUF file of `ftype`, tensor by tensor (computed)."""
    from wan_demo.model.memory.sizes import real_transformer_shapes

    return gguf_size(gguf_layout.file_tensors(real_transformer_shapes(), ftype))


@functools.lru_cache(maxsize=4)
def file_size(path: str, mtime: float) -> ComponentSize:
    """A GGUF file on disk, tensor by tensor, from its header (`mtime` keys the cache)."""
    return gguf_size(gguf_layout.read_header(path))


def with_weights(sizes: dict[str, ComponentSize], weights: str, path: str = "") -> dict[str, ComponentSize]:
    """Sizes with the transformer stored as `weights` (a GGUF type; "bf16"/"fp8" leave them): the
    file's own header when `path` is a GGUF file on disk, else city96's layout for that type. Sizes
    taken from a loaded GGUF transformer (packed bytes) are kept as they are."""
    if weights not in BY_NAME and not path.endswith(".gguf"):
        return sizes
    if sizes["transformer"].load_bytes < 1.5:  # measured from a loaded GGUF transformer
        return sizes
    if path.endswith(".gguf") and os.path.isfile(path):
        try:
            return {**sizes, "transformer": file_size(path, os.path.getmtime(path))}
        except (ValueError, OSError, KeyError, IndexError):
            pass  # not a readable GGUF file: planned by its name; the loader names the problem
    return {**sizes, "transformer": transformer_size(weights if weights in BY_NAME else "Q4_K_M")}


def nearest_fit(plan_for_weights, current: str):
    """The best-quality GGUF plan that fits when `current` weights do not: (Weights, Plan) or None.

    `plan_for_weights(name)` returns the planner's choice for those weights."""
    smaller = BY_NAME[current].file_gb if current in BY_NAME else 99.0
    order = [w for w in GGUF_WEIGHTS if w.file_gb < smaller]
    for w in order:
        plan = plan_for_weights(w.name)
        if plan.fits:
            return w, plan
    return None


def no_fit_message(plan, plan_for_weights) -> str:
    """One start-up message: what does not fit, and the nearest option that would."""
    have = f"{plan.budget.vram_gb:.0f} GB VRAM and {plan.budget.ram_gb:.0f} GB host RAM"
    head = (
        f"The model does not fit: {have}; the smallest plan with {plan.weights} weights "
        f"({plan.strategy.name}) needs ~{plan.peak_vram_gb:.1f} GB VRAM and "
        f"~{max(plan.host_ram_gb, plan.load_host_gb):.1f} GB host RAM (too little {plan.limit})."
    )
    nearest = nearest_fit(plan_for_weights, plan.weights)
    if nearest is None:
        return f"{head} No transformer file format fits either: use a bigger GPU or more host RAM."
    w, fit = nearest
    return (
        f"{head} Nearest option that fits: use a {w.name} transformer file "
        f"({w.quality}): WAN_DEMO_TRANSFORMER_FILE={w.file} (plan {fit.strategy.name}, "
        f"~{fit.peak_vram_gb:.1f} GB VRAM, ~{max(fit.host_ram_gb, fit.load_host_gb):.1f} GB host RAM). "
        "Or force a plan with WAN_DEMO_MEMORY_MODE."
    )
