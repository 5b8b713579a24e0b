"""Memory planner: from free VRAM and host RAM pick the fastest strategy whose estimated peaks fit.

Strategies, fastest first (expected speed relative to everything resident, an estimate):
everything resident; text encoder on CPU; model offload; fp8 storage (resident / with offload);
block-level group offload with CUDA streams; the same in fp8; leaf-level group offload; the same in
fp8; sequential offload as the last resort. Sizes come from model/memory/estimate.py; wiring of a
chosen plan onto a pipeline lives in wan_demo.model.memory.apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wan_demo.model.memory import weights as memory_weights
from wan_demo.model.memory.estimate import (
    ComponentSize,
    Shape,
    transformer_activations_gb,
    vae_activations_gb,
)

VRAM_USABLE = 0.95  # fraction of the budget a plan may use (allocator fragmentation)
RAM_USABLE = 0.90  # fraction of host RAM a plan may use (OS, page cache)
CUDA_OVERHEAD_GB = 1.0  # CUDA context, cuBLAS workspace, latents, prompt embeddings
HOST_BASELINE_GB = 3.0  # Python, torch + CUDA libraries, Gradio server
# Loading: weights stream from disk (mmap, low_cpu_mem_usage) to their final place; the extra host
# RAM in flight is one tensor / shard (bench/load.py measures peak RSS over final RSS).
LOAD_SLACK_GB = 2.0
MEASURED_LOAD_OVERHEAD_GB = 0.0  # placeholder until bench/load.py reports
FP8_SPEED = 0.93  # layerwise casting upcasts each layer's weights per forward

# Placements, per component: "gpu" = always on the GPU; "offload" = moved there while it runs
# (model offload); "group_block" / "group_leaf" = streamed in groups (CUDA streams prefetch the
# next group); "sequential" = one leaf at a time, no prefetch; "cpu" = runs on the CPU.
RESIDENT_ON_HOST = ("offload", "group_block", "group_leaf", "sequential", "cpu")


@dataclass(frozen=True)
class Strategy:
    name: str
    transformer: str
    text_encoder: str
    others: str  # image encoder (CLIP) and VAE
    fp8: bool  # transformer and text encoder weights stored in float8_e4m3fn, computed in bf16
    speed: float  # expected speed relative to "resident" (estimate)
    why: str


STRATEGIES = (
    Strategy("resident", "gpu", "gpu", "gpu", False, 1.00, "everything stays on the GPU"),
    Strategy("resident_te_cpu", "gpu", "cpu", "gpu", False, 0.95,
             "text encoder on the CPU (prompt encoding slower), the rest on the GPU"),
    Strategy("model_offload", "offload", "offload", "offload", False, 0.92,
             "each model moves to the GPU while it runs (enable_model_cpu_offload)"),
    Strategy("fp8_resident", "gpu", "gpu", "gpu", True, 1.00 * FP8_SPEED,
             "fp8 weight storage (layerwise casting), everything on the GPU"),
    Strategy("fp8_resident_te_cpu", "gpu", "cpu", "gpu", True, 0.95 * FP8_SPEED,
             "fp8 transformer on the GPU, text encoder on the CPU"),
    Strategy("fp8_model_offload", "offload", "offload", "offload", True, 0.92 * FP8_SPEED,
             "fp8 weight storage plus model offload"),
    Strategy("group_block", "group_block", "group_leaf", "group_leaf", False, 0.85,
             "transformer streamed block by block with CUDA-stream prefetch"),
    Strategy("fp8_group_block", "group_block", "group_leaf", "group_leaf", True, 0.85 * FP8_SPEED,
             "fp8 storage, transformer streamed block by block"),
    Strategy("fp8_group_block_te_gpu", "group_block", "gpu", "group_leaf", True, 0.85 * FP8_SPEED,
             "fp8 storage, transformer streamed block by block, text encoder kept on the GPU "
             "(saves host RAM)"),
    Strategy("group_leaf", "group_leaf", "group_leaf", "group_leaf", False, 0.70,
             "every layer streamed separately with CUDA-stream prefetch"),
    Strategy("fp8_group_leaf", "group_leaf", "group_leaf", "group_leaf", True, 0.70 * FP8_SPEED,
             "fp8 storage, every layer streamed separately"),
    Strategy("sequential", "sequential", "sequential", "sequential", False, 0.10,
             "sequential CPU offload, one layer at a time without prefetch (last resort)"),
)  # fmt: skip
BY_NAME = {s.name: s for s in STRATEGIES}
VAE_TILING_SPEED = 0.98  # tiled VAE decode costs a little time and saves GBs at 480P


@dataclass(frozen=True)
class Budget:
    vram_gb: float
    ram_gb: float
    source: str  # where the figures came from, e.g. "settings" or "torch/psutil"
    device: str = "cuda"  # on "cpu" the device memory is host RAM


@dataclass(frozen=True)
class Plan:
    strategy: Strategy
    vae_tiling: bool
    peak_vram_gb: float  # estimated peak over all pipeline phases, CUDA overhead included
    host_ram_gb: float  # estimated steady host RAM (weights kept off the GPU + process baseline)
    per_component: dict[str, dict[str, float]]  # name -> {"vram_gb", "host_gb"} (peak while active)
    fits: bool
    budget: Budget
    notes: tuple[str, ...] = field(default=())
    weights: str = "bf16"  # transformer weights: "bf16" | "fp8" | a GGUF type ("Q4_K_M")
    load_host_gb: float = 0.0  # estimated peak host RAM while loading

    @property
    def quality(self) -> str:
        return memory_weights.quality_of(self.weights)

    @property
    def speed(self) -> float:
        gguf = memory_weights.BY_NAME.get(self.weights)
        factor = (VAE_TILING_SPEED if self.vae_tiling else 1.0) * (gguf.speed if gguf else 1.0)
        return round(self.strategy.speed * factor, 3)

    @property
    def summary(self) -> str:
        """One line for the UI banner."""
        tiling = " + VAE tiling" if self.vae_tiling else ""
        too_small = "" if self.fits else f" (DOES NOT FIT: too little {self.limit})"
        memory = "VRAM" if self.budget.device.startswith("cuda") else "device memory (cpu)"
        return (
            f"{self.strategy.name}{tiling}: ~{self.peak_vram_gb:.1f} GB {memory}, "
            f"~{self.host_ram_gb:.1f} GB host RAM{too_small}"
        )

    @property
    def limit(self) -> str:
        """Which budget a plan exceeds: "VRAM", "host RAM", both, or "" when it fits."""
        over = [
            name
            for name, need, have, usable in (
                ("VRAM", self.peak_vram_gb, self.budget.vram_gb, VRAM_USABLE),
                ("host RAM", max(self.host_ram_gb, self.load_host_gb), self.budget.ram_gb, RAM_USABLE),
            )
            if need > have * usable
        ]
        return " and ".join(over)

    def info(self) -> dict:
        """JSON-safe details for Engine.info and the metadata of every video."""
        return dict(
            strategy=self.strategy.name,
            explanation=self.strategy.why,
            weights=self.weights,
            quality=self.quality,
            est_load_host_ram_gb=self.load_host_gb,
            vae_tiling=self.vae_tiling,
            fits=self.fits,
            est_peak_vram_gb=self.peak_vram_gb,
            est_host_ram_gb=self.host_ram_gb,
            expected_relative_speed=self.speed,
            budget_vram_gb=round(self.budget.vram_gb, 1),
            budget_ram_gb=round(self.budget.ram_gb, 1),
            budget_source=self.budget.source,
            per_component=self.per_component,
            notes=list(self.notes),
        )


def _working_gb(size: ComponentSize, placement: str, fp8: bool) -> float:
    """GPU weights of one component while it runs."""
    if placement in ("gpu", "offload"):
        return size.weights_gb(fp8)
    if placement == "group_block":  # current + prefetched block, plus embeddings/head
        return size.non_block_gb(fp8) + 2 * size.block_gb(fp8)
    if placement == "group_leaf":  # current + prefetched leaf
        return 2 * size.leaf_gb(fp8)
    if placement == "sequential":
        return size.leaf_gb(fp8)
    return 0.0  # "cpu"


def estimate(
    strategy: Strategy, sizes: dict[str, ComponentSize], shape: Shape, budget: Budget,
    dims: tuple[int, int, int], vae_tiling: bool = False, weights: str = "bf16",
) -> Plan:  # fmt: skip
    """Peak VRAM over the phases text -> image -> VAE encode -> denoise -> VAE decode, host RAM
    while running and while loading.

    `dims` = (transformer dim, transformer ffn_dim, VAE base_dim) for the activation estimates;
    `weights` = a GGUF type when the transformer comes from a GGUF file (fp8 then applies to the
    text encoder only).
    """
    dim, ffn_dim, vae_base = dims
    gguf = weights in memory_weights.BY_NAME
    sizes = memory_weights.with_weights(sizes, weights)
    weights = weights if gguf else ("fp8" if strategy.fp8 else "bf16")
    placement = {
        "transformer": strategy.transformer,
        "text_encoder": strategy.text_encoder,
        "image_encoder": strategy.others,
        "vae": strategy.others,
    }
    fp8 = {name: strategy.fp8 and name in ("transformer", "text_encoder") for name in placement}
    dequantized = sizes["transformer"].largest_leaf_params * 2 / 1e9 if gguf else 0.0  # one bf16 layer
    activations = {
        "transformer": transformer_activations_gb(shape, dim, ffn_dim) + dequantized,
        "vae": vae_activations_gb(shape, vae_base, vae_tiling),
    }
    resident = sum(sizes[n].weights_gb(fp8[n]) for n in sizes if placement[n] == "gpu")
    per_component, peaks = {}, []
    for name, size in sizes.items():
        on_gpu = placement[name] != "cpu"
        active = _working_gb(size, placement[name], fp8[name]) + (activations.get(name, 0.0) if on_gpu else 0)
        others_resident = resident - (size.weights_gb(fp8[name]) if placement[name] == "gpu" else 0.0)
        peaks.append(others_resident + active)
        host = size.weights_gb(fp8[name]) if placement[name] in RESIDENT_ON_HOST else 0.0
        per_component[name] = {"vram_gb": round(active, 2), "host_gb": round(host, 2)}
    peak = max(peaks) + CUDA_OVERHEAD_GB
    host = sum(c["host_gb"] for c in per_component.values()) + HOST_BASELINE_GB
    load_host = host + LOAD_SLACK_GB
    fits = peak <= budget.vram_gb * VRAM_USABLE and load_host <= budget.ram_gb * RAM_USABLE
    notes = ("sequential offload rebuilds GGUF parameters (diffusers #14691): not with GGUF",) if gguf else ()
    if gguf and strategy.transformer == "sequential":
        fits = False
    return Plan(strategy, vae_tiling, round(peak, 1), round(host, 1), per_component, fits, budget, notes,
                weights, round(load_host, 1))  # fmt: skip


def choose(
    budget: Budget, sizes: dict[str, ComponentSize], shape: Shape, dims: tuple[int, int, int],
    forced: str = "auto", weights: str = "bf16",
) -> Plan:  # fmt: skip
    """The fastest plan that fits (trying VAE tiling when only the VAE phase overflows).

    `forced` names a strategy to use regardless (its plan still says whether it fits). When
    nothing fits, the least-VRAM plan comes back with fits=False: the card is too small.
    """
    if forced != "auto":
        if forced not in BY_NAME:
            raise ValueError(f"memory_mode {forced!r}: must be 'auto' or one of {', '.join(BY_NAME)}")
        plan = estimate(BY_NAME[forced], sizes, shape, budget, dims, weights=weights)
        if plan.fits:
            return plan
        return estimate(BY_NAME[forced], sizes, shape, budget, dims, vae_tiling=True, weights=weights)
    tried = []
    for strategy in STRATEGIES:
        for tiling in (False, True):
            plan = estimate(strategy, sizes, shape, budget, dims, vae_tiling=tiling, weights=weights)
            if plan.fits:
                return plan
            tried.append(plan)
    return min(tried, key=lambda p: (not p.fits, p.peak_vram_gb, p.host_ram_gb))
