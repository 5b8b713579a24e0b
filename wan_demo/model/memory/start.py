"""Start-up planning: the budget (torch / psutil / Settings), the plan for a loaded pipeline, and
the check before loading that fails start-up with one message naming the nearest option that fits.
"""

from __future__ import annotations

from wan_demo.core.settings import Settings
from wan_demo.model.memory import weights as memory_weights
from wan_demo.model.memory.estimate import TRANSFORMER_CONFIG, VAE_CONFIG, Shape, real_sizes
from wan_demo.model.memory.plan import Budget, Plan, choose

REAL_DIMS = (
    TRANSFORMER_CONFIG["num_attention_heads"] * TRANSFORMER_CONFIG["attention_head_dim"],
    TRANSFORMER_CONFIG["ffn_dim"],
    VAE_CONFIG["base_dim"],
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
    from wan_demo.model.memory.estimate import sizes_of_pipe

    budget = read_budget(settings, device)
    budget = Budget(budget.vram_gb, budget.ram_gb / ranks_per_host, budget.source, budget.device)
    forced = settings.memory_mode
    if not device.startswith("cuda"):
        budget = Budget(budget.ram_gb, budget.ram_gb, budget.source, device)
        forced = "resident" if forced == "auto" else forced
    weights = "bf16"
    if getattr(pipe.transformer, "hf_quantizer", None) is not None:  # a GGUF file
        from wan_demo.model.gguf import main_type

        weights = memory_weights.weights_for_file(main_type(pipe.transformer)).name
    return choose(budget, sizes_of_pipe(pipe), shape or Shape(), dims_of(pipe), forced, weights)


def preflight(settings: Settings, device: str, shape: Shape, ranks_per_host: int = 1) -> Plan:
    """Before loading the REAL model on a GPU: the plan from the real configs (meta device) and
    the transformer file's type. When nothing fits and no plan was forced, raise MemoryError with
    one message naming the nearest option that would fit (a smaller GGUF transformer file)."""
    budget = read_budget(settings, device)
    budget = Budget(budget.vram_gb, budget.ram_gb / ranks_per_host, budget.source, budget.device)
    sizes = real_sizes()

    def plan_with(name: str) -> Plan:
        return choose(budget, sizes, shape, REAL_DIMS, settings.memory_mode, name)

    plan = plan_with(file_weights(settings.transformer_file))
    if not plan.fits and settings.memory_mode == "auto":
        raise MemoryError(memory_weights.no_fit_message(plan, plan_with))
    return plan


def file_weights(transformer_file: str) -> str:
    """The weights a transformer file names (city96 names: ...-Q4_K_M.gguf); bf16 otherwise."""
    if not transformer_file.endswith(".gguf"):
        return "bf16"
    stem = transformer_file.rsplit("/", 1)[-1].removesuffix(".gguf").upper()
    for w in memory_weights.GGUF_WEIGHTS:
        if stem.endswith(w.name.upper()):
            return w.name
    return "Q4_K_M"  # unknown naming: plan for a mid-size file (the loaded file is re-planned)


QUALITY_ORDER = ("bf16", "Q8_0", "Q6_K", "fp8", "Q5_K_M", "Q4_K_M", "Q3_K_M")  # best first
MIN_SPEED = 0.5  # a plan slower than this vs everything resident is a last resort


def recommend(budget: Budget, sizes, shape: Shape, dims=REAL_DIMS) -> Plan:
    """The plan to recommend for a machine, weights included: the best-quality weights with a
    plan that fits at >= MIN_SPEED (the fastest such plan); else any plan that fits; else the
    plan that overflows least (fits=False). fp8 here is layerwise-casting storage of bf16 weights;
    GGUF plans may also store the text encoder in fp8."""
    from wan_demo.model.memory.plan import STRATEGIES, estimate

    def plans(weights: str) -> list[Plan]:
        gguf = weights in memory_weights.BY_NAME
        strategies = [s for s in STRATEGIES if gguf or s.fp8 == (weights == "fp8")]
        return [estimate(s, sizes, shape, budget, dims, vae_tiling=t, weights=weights if gguf else "bf16")
                for s in strategies for t in (False, True)]  # fmt: skip

    every = {w: plans(w) for w in QUALITY_ORDER}
    for ok in (lambda p: p.fits and p.speed >= MIN_SPEED, lambda p: p.fits):
        for weights in QUALITY_ORDER:
            good = [p for p in every[weights] if ok(p)]
            if good:
                return max(good, key=lambda p: p.speed)
    return min((p for ps in every.values() for p in ps), key=_overflow)


def _overflow(plan: Plan) -> float:
    """GB over budget, VRAM and host RAM together (the nearest miss is the smallest)."""
    from wan_demo.model.memory.plan import RAM_USABLE, VRAM_USABLE

    b = plan.budget
    over_vram = max(0.0, plan.peak_vram_gb - b.vram_gb * VRAM_USABLE)
    return over_vram + max(0.0, max(plan.host_ram_gb, plan.load_host_gb) - b.ram_gb * RAM_USABLE)
