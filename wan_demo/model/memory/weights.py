"""Weight formats of the transformer the planner can choose between, and the start-up check that
names the nearest one that would fit when nothing does.

bf16 is the repo's; fp8 is layerwise-casting storage (memory.Strategy.fp8); the GGUF types are
files (Settings.transformer_file), e.g. from city96/Wan2.1-I2V-14B-480P-gguf. Bytes per weight of a
GGUF type are its block size (Q8_0: 34 bytes per 32 weights) plus, for the _K_M mixes, the share
of tensors llama.cpp-style converters keep one type higher: estimated, not read from a file.
Published sizes for the T2V 14B sibling (FIELD-NOTES): bf16 28.6 GB, Q8 15.9 GB, Q4 10.1 GB.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from wan_demo.model.memory.estimate import ComponentSize

GGUF_REPO = "city96/Wan2.1-I2V-14B-480P-gguf"


@dataclass(frozen=True)
class Weights:
    name: str  # as in file names: "Q4_K_M"
    bytes_per_weight: float  # transformer storage, averaged over its weights
    quality: str  # the cost, said plainly
    speed: float  # per-forward speed vs bf16 on a GPU (estimate: dequantize per layer per forward)

    @property
    def file(self) -> str:
        return f"{GGUF_REPO}/wan2.1-i2v-14b-480p-{self.name}.gguf"


# Best quality first; the planner takes the first that fits.
GGUF_WEIGHTS = (
    Weights("Q8_0", 34 / 32, "near-lossless (8-bit blocks)", 0.95),
    Weights("Q6_K", 210 / 256, "very small loss", 0.93),
    Weights("Q5_K_M", 0.72, "small loss: slightly softer fine detail", 0.93),
    Weights("Q4_K_M", 0.61, "visible loss: Q4 loses fine detail and texture", 0.92),
    Weights("Q3_K_M", 0.49, "clear loss: soft detail, more artefacts and flicker", 0.90),
)
BY_NAME = {w.name: w for w in GGUF_WEIGHTS}
PLAIN_QUALITY = {"bf16": "reference", "fp8": "small loss (e4m3: 3 mantissa bits per weight)"}


def weights_for_file(quant_type: str) -> Weights:
    """The Weights of a loaded GGUF file from its main tensor type (Q4_K -> Q4_K_M, Q8_0 -> Q8_0)."""
    for w in GGUF_WEIGHTS:
        if w.name.startswith(quant_type):
            return w
    return Weights(quant_type, BY_NAME["Q4_K_M"].bytes_per_weight, "quantized", 0.92)


def quality_of(weights: str) -> str:
    if weights in PLAIN_QUALITY:
        return PLAIN_QUALITY[weights]
    return BY_NAME[weights].quality if weights in BY_NAME else "quantized"


def with_weights(sizes: dict[str, ComponentSize], weights: str) -> dict[str, ComponentSize]:
    """Sizes with the transformer stored as `weights` (a GGUF type; "bf16"/"fp8" leave them)."""
    if weights not in BY_NAME:
        return sizes
    t = sizes["transformer"]
    if t.load_bytes < 1.5:  # measured from a loaded GGUF transformer: keep the real bytes
        return sizes
    gguf = dataclasses.replace(t, load_bytes=BY_NAME[weights].bytes_per_weight, fp8_params=0)
    return {**sizes, "transformer": gguf}


def nearest_fit(plan_for_weights, current: str):
    """The best-quality GGUF plan that fits when `current` weights do not: (Weights, Plan) or None.

    `plan_for_weights(name)` returns the planner's choice for those weights."""
    smaller = BY_NAME[current].bytes_per_weight if current in BY_NAME else 99.0
    order = [w for w in GGUF_WEIGHTS if w.bytes_per_weight < smaller]
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
