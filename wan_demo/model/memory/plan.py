"""Memory planner: from free VRAM and host RAM pick the fastest plan whose estimated peaks BOTH fit.

Strategies, fastest first (expected speed relative to everything resident, an estimate):
everything resident; text encoder on CPU; model offload; fp8 storage (resident / with offload);
block-level group offload with CUDA streams; the same in fp8; leaf-level group offload; the same in
fp8; sequential offload as the last resort. For each strategy the host side is tried the fastest way
first: group offload pinning every tensor up front, then pinning lazily per step (a GGUF file then
streams from the page cache), then also freeing the text encoder between prompts (model/memory/host.py).
Sizes: model/memory/sizes.py (the real tensor list) and weights.py (GGUF files); the wiring of a chosen
plan onto a pipeline: model/memory/apply.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wan_demo.model.memory import host as host_ram
from wan_demo.model.memory import weights as memory_weights
from wan_demo.model.memory.estimate import (
    DEQUANT_COPIES,
    Shape,
    transformer_activations_gb,
    vae_activations_gb,
)
from wan_demo.model.memory.host import HostUse, Layout
from wan_demo.model.memory.sizes import ComponentSize

VRAM_USABLE = 0.95  # fraction of the budget a plan may use (allocator fragmentation)
RAM_USABLE = 0.90  # fraction of host RAM a plan may use (OS, page cache)
CUDA_OVERHEAD_GB = 1.0  # CUDA context, cuBLAS workspace, latents, prompt embeddings (estimated)
FP8_SPEED = 0.93  # layerwise casting upcasts each layer's weights per forward (estimated)
LAZY_PIN_SPEED = 0.90  # lazy pinning copies each group into pinned memory every step (estimated)
# A GGUF file larger than the page cache the run leaves is read from disk whole every step (a cyclic
# scan defeats LRU): each forward waits file_gb / DISK_GBPS more (both estimated: NVMe, a 480P
# forward with offload on a consumer card).
DISK_GBPS = 3.0
FORWARD_S = 10.0
TE_FREED_SPEED = 0.9  # a new prompt loads the text encoder again (~10-20 s from NVMe: estimated)
TE_CPU_SPEED = 0.95  # the text encoder computes on the CPU (only when a prompt is new: estimated)
# Host options, fastest first: (pinning, text encoder kept between prompts)
HOST_OPTIONS = (("upfront", True), ("lazy", True), ("lazy", False))

# Placements: "gpu" always there; "offload" moved there while it runs (model offload); "group_block" /
# "group_leaf" streamed in groups, CUDA streams prefetching; "sequential" one leaf, no prefetch; "cpu".


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
    Strategy("fp8_group_block_te_cpu", "group_block", "cpu", "group_leaf", True,
             0.85 * TE_CPU_SPEED * FP8_SPEED, "fp8 storage, transformer streamed block by block, text "
             "encoder computed on the CPU (the least VRAM and host RAM while encoding)"),
    Strategy("group_leaf", "group_leaf", "group_leaf", "group_leaf", False, 0.70,
             "every layer streamed separately with CUDA-stream prefetch"),
    Strategy("fp8_group_leaf", "group_leaf", "group_leaf", "group_leaf", True, 0.70 * FP8_SPEED,
             "fp8 storage, every layer streamed separately"),
    Strategy("sequential", "sequential", "sequential", "sequential", False, 0.10,
             "sequential CPU offload, one layer at a time without prefetch (last resort)"),
)  # fmt: skip
BY_NAME = {s.name: s for s in STRATEGIES}  # names and order: core.choices.MEMORY_PLANS (tests/test_cli.py)
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
    host: HostUse  # host RAM per phase (load, apply, encode, denoise, decode), pinned, page cache
    per_component: dict[str, dict[str, float]]  # name -> {"vram_gb", "host_gb"} while it runs
    fits: bool
    budget: Budget
    layout: Layout
    notes: tuple[str, ...] = field(default=())
    weights: str = "bf16"  # transformer weights: "bf16" | "fp8" | a GGUF type ("Q4_K_M")

    @property
    def host_ram_gb(self) -> float:
        """Estimated peak host RAM (process memory) over every phase, baseline included."""
        return self.host.peak_gb

    @property
    def load_host_gb(self) -> float:
        return max(self.host.phases["load"], self.host.phases["apply"])

    @property
    def quality(self) -> str:
        return memory_weights.quality_of(self.weights)

    @property
    def speed(self) -> float:
        gguf = memory_weights.BY_NAME.get(self.weights)
        factor = (VAE_TILING_SPEED if self.vae_tiling else 1.0) * (gguf.speed if gguf else 1.0)
        if gguf and self.strategy.fp8:  # fp8 then stores only the text encoder: no per-step upcast
            factor /= FP8_SPEED
        lazy = self.layout.pinning == "lazy" and self.strategy.transformer.startswith("group_")
        disk = 1 / (1 + self.host.page_cache_gb / DISK_GBPS / FORWARD_S) if self.streams_from_disk else 1.0
        factor *= (LAZY_PIN_SPEED if lazy else 1.0) * disk
        return round(self.strategy.speed * factor * (1.0 if self.layout.te_kept else TE_FREED_SPEED), 3)

    @property
    def streams_from_disk(self) -> bool:
        """The transformer file does not fit the page cache the run leaves: each step re-reads it."""
        spare = self.budget.ram_gb * RAM_USABLE - self.host.phases["denoise"]
        return self.host.page_cache_gb > host_ram.LIBRARIES_GB and spare < self.host.page_cache_gb

    @property
    def options(self) -> str:
        """The host-side options in words ("" for the defaults)."""
        parts = []
        if self.layout.pinning == "lazy" and "group_" in str(self.layout.placement.values()):
            parts.append("lazy pinning")
        if not self.layout.te_kept:
            parts.append("text encoder freed between prompts")
        return ", ".join(parts)

    @property
    def summary(self) -> str:
        """One line for the UI banner."""
        extras = "".join(f" + {o}" for o in (["VAE tiling"] if self.vae_tiling else []) + (
            [self.options] if self.options else []))  # fmt: skip
        too_small = "" if self.fits else f" (DOES NOT FIT: too little {self.limit})"
        memory = "VRAM" if self.budget.device.startswith("cuda") else "device memory (cpu)"
        return (
            f"{self.strategy.name}{extras}: ~{self.peak_vram_gb:.1f} GB {memory}, "
            f"~{self.host_ram_gb:.1f} GB host RAM{too_small}"
        )

    @property
    def limit(self) -> str:
        """Which budget a plan exceeds: "VRAM", "host RAM", both, or "" when it fits."""
        over = [
            name
            for name, need, have, usable in (
                ("VRAM", self.peak_vram_gb, self.budget.vram_gb, VRAM_USABLE),
                ("host RAM", self.host_ram_gb, self.budget.ram_gb, RAM_USABLE),
            )
            if need > have * usable
        ]
        return " and ".join(over)

    def info(self) -> dict:
        """JSON-safe details for Engine.info and the metadata of every video."""
        return dict(
            strategy=self.strategy.name, explanation=self.strategy.why, weights=self.weights,
            quality=self.quality, vae_tiling=self.vae_tiling, pinning=self.layout.pinning,
            text_encoder_kept=self.layout.te_kept, fits=self.fits, est_peak_vram_gb=self.peak_vram_gb,
            est_host_ram_gb=self.host_ram_gb, est_host_ram_by_phase_gb=self.host.phases,
            est_pinned_gb=self.host.pinned_gb, est_page_cache_gb=self.host.page_cache_gb,
            expected_relative_speed=self.speed, budget_vram_gb=round(self.budget.vram_gb, 1),
            budget_ram_gb=round(self.budget.ram_gb, 1), budget_source=self.budget.source,
            per_component=self.per_component, notes=list(self.notes),
        )  # fmt: skip


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


def layout_of(strategy: Strategy, gguf: bool, pinning: str = "upfront", te_kept: bool = True) -> Layout:
    placement = {"transformer": strategy.transformer, "text_encoder": strategy.text_encoder,
                 "image_encoder": strategy.others, "vae": strategy.others}  # fmt: skip
    # fp8 storage: the transformer (unless it is a GGUF file) and the text encoder
    fp8 = {n: strategy.fp8 and (n == "text_encoder" or (n == "transformer" and not gguf)) for n in placement}
    kept = te_kept or strategy.text_encoder == "gpu"  # a GPU-resident encoder is never freed
    return Layout(placement, fp8, pinning, kept, mapped=gguf)


def estimate(
    strategy: Strategy, sizes: dict[str, ComponentSize], shape: Shape, budget: Budget,
    dims: tuple[int, int, int], vae_tiling: bool = False, weights: str = "bf16",
    pinning: str = "upfront", te_kept: bool = True, baseline_gb: float | None = None,
    extra_host_gb: float = 0.0,
) -> Plan:  # fmt: skip
    """Peak VRAM over the phases text -> image -> VAE encode -> denoise -> VAE decode, and host RAM
    per phase as the plan is applied (host.py). `dims` = (transformer dim, ffn_dim, VAE base_dim)
    for the activation estimates; `weights` = a GGUF type when the transformer is a GGUF file;
    `baseline_gb`: process memory before weights (default: CPU measured + CUDA estimated)."""
    dim, ffn_dim, vae_base = dims
    gguf = weights in memory_weights.BY_NAME
    sizes = memory_weights.with_weights(sizes, weights)
    layout = layout_of(strategy, gguf, pinning, te_kept)
    placement, fp8 = layout.placement, layout.fp8
    # a GGUF layer is dequantized per forward: its bf16 weight and the temporaries (DEQUANT_COPIES)
    dequantized = sizes["transformer"].largest_leaf_params * 2 * DEQUANT_COPIES / 1e9 if gguf else 0.0
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
        weights_gb = round(size.weights_gb(fp8[name]), 2)
        per_component[name] = {"vram_gb": round(active, 2), "weights_gb": weights_gb}
    peak = max(peaks) + (CUDA_OVERHEAD_GB if budget.device.startswith("cuda") else 0.0)
    if baseline_gb is None:
        cuda = host_ram.CUDA_HOST_GB if budget.device.startswith("cuda") else 0.0
        baseline_gb = host_ram.CPU_BASELINE_GB + cuda
    use = host_ram.host_use(sizes, layout, baseline_gb, extra_host_gb)
    fits = peak <= budget.vram_gb * VRAM_USABLE and use.peak_gb <= budget.ram_gb * RAM_USABLE
    notes = _notes(use, budget, gguf)
    if gguf and strategy.transformer == "sequential":
        fits = False
    weights = weights if gguf else ("fp8" if strategy.fp8 else "bf16")
    return Plan(strategy, vae_tiling, round(peak, 1), use, per_component, fits, budget, layout, notes,
                weights)  # fmt: skip


def _notes(use: HostUse, budget: Budget, gguf: bool) -> tuple[str, ...]:
    notes = ["sequential offload rebuilds GGUF parameters (diffusers #14691): not with GGUF"] if gguf else []
    spare = budget.ram_gb * RAM_USABLE - use.phases["denoise"]
    if use.page_cache_gb > host_ram.LIBRARIES_GB and spare < use.page_cache_gb:
        notes.append(
            f"the weights read from their files ({use.page_cache_gb:.1f} GB) do not fit the page cache "
            f"left (~{max(spare, 0):.1f} GB): each step reads them from disk again"
        )
    return tuple(notes)


def host_options(strategy: Strategy) -> tuple[tuple[str, bool], ...]:
    """The host-side options worth trying for a strategy, fastest first."""
    groups = "group_" in strategy.transformer + strategy.text_encoder + strategy.others
    frees = strategy.text_encoder != "gpu"
    return tuple(o for o in HOST_OPTIONS if (o[0] == "upfront" or groups) and (o[1] or frees))


def choose(
    budget: Budget, sizes: dict[str, ComponentSize], shape: Shape, dims: tuple[int, int, int],
    forced: str = "auto", weights: str = "bf16", extra_host_gb: float = 0.0,
) -> Plan:  # fmt: skip
    """The fastest plan that fits: per strategy (fastest first), without and with VAE tiling, each
    host option. `forced` names a strategy to use regardless (its plan still says whether it fits).
    When nothing fits, the plan that overflows least comes back with fits=False."""
    if forced != "auto" and forced not in BY_NAME:
        raise ValueError(f"memory_mode {forced!r}: must be 'auto' or one of {', '.join(BY_NAME)}")
    tried = []
    for strategy in [BY_NAME[forced]] if forced != "auto" else STRATEGIES:
        for tiling in (False, True):
            for pinning, kept in host_options(strategy):
                plan = estimate(strategy, sizes, shape, budget, dims, tiling, weights, pinning, kept,
                                extra_host_gb=extra_host_gb)  # fmt: skip
                if plan.fits:
                    return plan
                tried.append(plan)
    return min(tried, key=overflow)


def overflow(plan: Plan) -> float:
    """GB over budget, VRAM and host RAM together (the nearest miss is the smallest)."""
    b = plan.budget
    over_vram = max(0.0, plan.peak_vram_gb - b.vram_gb * VRAM_USABLE)
    return over_vram + max(0.0, plan.host_ram_gb - b.ram_gb * RAM_USABLE)
