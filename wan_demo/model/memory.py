"""Memory planner: from free VRAM and host RAM pick the fastest strategy whose estimated peaks fit.

Strategies, fastest first (expected speed relative to everything resident, an estimate):
everything resident; text encoder on CPU; model offload; fp8 storage (resident / with offload);
block-level group offload with CUDA streams; the same in fp8; leaf-level group offload; the same in
fp8; sequential offload as the last resort. Sizes come from wan_demo.memory_estimate; wiring of a
chosen plan onto a pipeline lives in wan_demo.model.memory_apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wan_demo.core.settings import Settings
from wan_demo.model.memory_estimate import (
    ComponentSize,
    Shape,
    transformer_activations_gb,
    vae_activations_gb,
)

VRAM_USABLE = 0.95  # fraction of the budget a plan may use (allocator fragmentation)
RAM_USABLE = 0.90  # fraction of host RAM a plan may use (OS, page cache)
CUDA_OVERHEAD_GB = 1.0  # CUDA context, cuBLAS workspace, latents, prompt embeddings
HOST_BASELINE_GB = 3.0  # Python, torch + CUDA libraries, Gradio server
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

    @property
    def speed(self) -> float:
        return round(self.strategy.speed * (VAE_TILING_SPEED if self.vae_tiling else 1.0), 3)

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
                ("host RAM", self.host_ram_gb, self.budget.ram_gb, RAM_USABLE),
            )
            if need > have * usable
        ]
        return " and ".join(over)

    def info(self) -> dict:
        """JSON-safe details for Engine.info and the metadata of every video."""
        return dict(
            strategy=self.strategy.name,
            explanation=self.strategy.why,
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


def read_budget(settings: Settings, device: str) -> Budget:
    """Free VRAM from torch and available RAM from psutil; Settings.vram_gb / ram_gb override."""
    import psutil
    import torch

    vram, ram, source = settings.vram_gb, settings.ram_gb, []
    if not vram and device.startswith("cuda") and torch.cuda.is_available():
        vram, source = torch.cuda.mem_get_info(device)[0] / 1e9, ["torch"]
    if not ram:
        ram, source = psutil.virtual_memory().available / 1e9, [*source, "psutil"]
    return Budget(vram, ram, "/".join(source) or "settings", device)


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
    dims: tuple[int, int, int], vae_tiling: bool = False,
) -> Plan:  # fmt: skip
    """Peak VRAM over the phases text -> image -> VAE encode -> denoise -> VAE decode, and host RAM.

    `dims` = (transformer dim, transformer ffn_dim, VAE base_dim) for the activation estimates.
    """
    dim, ffn_dim, vae_base = dims
    placement = {
        "transformer": strategy.transformer,
        "text_encoder": strategy.text_encoder,
        "image_encoder": strategy.others,
        "vae": strategy.others,
    }
    fp8 = {name: strategy.fp8 and name in ("transformer", "text_encoder") for name in placement}
    activations = {
        "transformer": transformer_activations_gb(shape, dim, ffn_dim),
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
    fits = peak <= budget.vram_gb * VRAM_USABLE and host <= budget.ram_gb * RAM_USABLE
    notes = []
    load_gb = max(s.weights_gb() for s in sizes.values()) + HOST_BASELINE_GB
    if load_gb > budget.ram_gb * RAM_USABLE:
        notes.append(f"loading stages each component in host RAM first (largest {load_gb:.0f} GB): add swap")
    return Plan(
        strategy, vae_tiling, round(peak, 1), round(host, 1), per_component, fits, budget, tuple(notes)
    )


def choose(
    budget: Budget, sizes: dict[str, ComponentSize], shape: Shape, dims: tuple[int, int, int],
    forced: str = "auto",
) -> Plan:  # fmt: skip
    """The fastest plan that fits (trying VAE tiling when only the VAE phase overflows).

    `forced` names a strategy to use regardless (its plan still says whether it fits). When
    nothing fits, the least-VRAM plan comes back with fits=False: the card is too small.
    """
    if forced != "auto":
        if forced not in BY_NAME:
            raise ValueError(f"memory_mode {forced!r}: must be 'auto' or one of {', '.join(BY_NAME)}")
        plan = estimate(BY_NAME[forced], sizes, shape, budget, dims)
        return plan if plan.fits else estimate(BY_NAME[forced], sizes, shape, budget, dims, vae_tiling=True)
    tried = []
    for strategy in STRATEGIES:
        for tiling in (False, True):
            plan = estimate(strategy, sizes, shape, budget, dims, vae_tiling=tiling)
            if plan.fits:
                return plan
            tried.append(plan)
    return min(tried, key=lambda p: (p.peak_vram_gb, p.host_ram_gb))


def dims_of(pipe) -> tuple[int, int, int]:
    """(transformer dim, ffn_dim, VAE base_dim) of a loaded pipeline, for the activation model."""
    c = pipe.transformer.config
    return c.num_attention_heads * c.attention_head_dim, c.ffn_dim, pipe.vae.config.base_dim


def plan_for(
    pipe, settings: Settings, device: str, shape: Shape | None = None, ranks_per_host: int = 1
) -> Plan:
    """The plan for this pipeline on this device. On the CPU device memory is host RAM and the
    default is everything resident; Settings.memory_mode forces a strategy anywhere.

    Under torchrun every rank holds a full copy of the weights (context parallelism shards only
    the token sequence, see `Shape.ranks`), so the ranks on one host split its RAM."""
    from wan_demo.model.memory_estimate import sizes_of_pipe

    budget = read_budget(settings, device)
    budget = Budget(budget.vram_gb, budget.ram_gb / ranks_per_host, budget.source, budget.device)
    forced = settings.memory_mode
    if not device.startswith("cuda"):
        budget = Budget(budget.ram_gb, budget.ram_gb, budget.source, device)
        forced = "resident" if forced == "auto" else forced
    return choose(budget, sizes_of_pipe(pipe), shape or Shape(), dims_of(pipe), forced)
