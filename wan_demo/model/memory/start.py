"""Start-up planning: the budget (torch / psutil / Settings), the plan for a loaded pipeline, and
the check before loading that fails start-up with one message naming the nearest option that fits.

Besides the four components the plans count what else the process holds: the step-distilled fast
LoRA (its tensors join the transformer's: they move with its groups) and a local prompt model
(prompt/vlm.py keeps it in host RAM and visits the GPU only for a rewrite).
"""

from __future__ import annotations

import os
from pathlib import Path

from wan_demo.core.settings import Settings
from wan_demo.model.memory import weights as memory_weights
from wan_demo.model.memory.estimate import TRANSFORMER_CONFIG, VAE_CONFIG, Shape
from wan_demo.model.memory.plan import STRATEGIES, Budget, Plan, choose, estimate, overflow
from wan_demo.model.memory.sizes import ComponentSize, lora_size, real_sizes

REAL_DIMS = (
    TRANSFORMER_CONFIG["num_attention_heads"] * TRANSFORMER_CONFIG["attention_head_dim"],
    TRANSFORMER_CONFIG["ffn_dim"],
    VAE_CONFIG["base_dim"],
)
FAST_LORA_RANK = 64  # lightx2v's published I2V LoRA (rank64 in its file name)
PROMPT_MODEL_GB = 7.5  # Qwen2.5-VL-3B in bf16 (3.75 B params), when its files cannot be measured


def read_budget(settings: Settings, device: str, ranks_per_host: int = 1) -> Budget:
    """Free VRAM from torch and available RAM from psutil; Settings.vram_gb / ram_gb override.
    Under torchrun every rank holds a full copy of the weights (context parallelism shards only the
    token sequence, see `Shape.ranks`), so the ranks on one host split its RAM."""
    import psutil

    vram, ram, source = settings.vram_gb, settings.ram_gb, []
    if not vram and device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            vram, source = torch.cuda.mem_get_info(device)[0] / 1e9, ["torch"]
    if not ram:
        ram, source = psutil.virtual_memory().available / 1e9, [*source, "psutil"]
    return Budget(vram, ram / ranks_per_host, "/".join(source) or "settings", device)


def dims_of(pipe) -> tuple[int, int, int]:
    """(transformer dim, ffn_dim, VAE base_dim) of a loaded pipeline, for the activation model."""
    c = pipe.transformer.config
    return c.num_attention_heads * c.attention_head_dim, c.ffn_dim, pipe.vae.config.base_dim


def plan_for(
    pipe, settings: Settings, device: str, shape: Shape | None = None, ranks_per_host: int = 1
) -> Plan:
    """The plan for this pipeline on this device. On the CPU device memory is host RAM and the
    default is everything resident; Settings.memory_mode forces a strategy anywhere."""
    from wan_demo.model.memory.sizes import sizes_of_pipe

    budget = read_budget(settings, device, ranks_per_host)
    forced = settings.memory_mode
    if not device.startswith("cuda"):
        budget = Budget(budget.ram_gb, budget.ram_gb, budget.source, device)
        forced = "resident" if forced == "auto" else forced
    weights = "bf16"
    if getattr(pipe.transformer, "hf_quantizer", None) is not None:  # a GGUF file
        from wan_demo.model.gguf import main_type

        weights = memory_weights.weights_for_file(main_type(pipe.transformer)).name
    sizes, lora_host_gb = with_lora_budget(settings, sizes_of_pipe(pipe), weights)
    extra = prompt_model_gb(settings) + lora_host_gb
    return choose(budget, sizes, shape or Shape(), dims_of(pipe), forced, weights, extra)


def planned_sizes(settings: Settings) -> dict[str, ComponentSize]:
    """The real components as this configuration will hold them: the transformer file's own tensor
    list (its header, or city96's layout for a file not on disk yet) plus the fast LoRA's tensors."""
    sizes = dict(real_sizes())
    file = settings.transformer_file
    weights = file_weights(file)
    sizes = memory_weights.with_weights(sizes, weights, _local_path(file))
    if settings.lora:
        sizes["transformer"] = lora_size(sizes["transformer"], FAST_LORA_RANK)
    return sizes


def preflight(settings: Settings, device: str, shape: Shape, ranks_per_host: int = 1) -> Plan:
    """Before loading the REAL model on a GPU: the plan from the real configs (meta device) and the
    transformer file. When nothing fits and no plan was forced, raise MemoryError with one message
    naming the nearest option that would fit (a smaller GGUF transformer file)."""
    budget = read_budget(settings, device, ranks_per_host)
    extra = prompt_model_gb(settings)
    base = dict(real_sizes())
    if settings.lora:
        base["transformer"] = lora_size(base["transformer"], FAST_LORA_RANK)

    def plan_with(name: str) -> Plan:
        sizes = planned_sizes(settings) if name == file_weights(settings.transformer_file) else base
        sizes, lora_host_gb = with_lora_budget(settings, sizes, name)
        return choose(budget, sizes, shape, REAL_DIMS, settings.memory_mode, name, extra + lora_host_gb)

    plan = plan_with(file_weights(settings.transformer_file))
    if not plan.fits and settings.memory_mode == "auto":
        raise MemoryError(memory_weights.no_fit_message(plan, plan_with))
    return plan


def with_lora_budget(settings: Settings, sizes: dict, weights: str) -> tuple[dict, float]:
    """The planner's term for community LoRAs (model/loras.py memory_terms): the warm adapters'
    budget, Settings.lora_warm_gb (with merge-on-load also the growth of requantized layers), joins
    the transformer's tensors, one share per block as peft places adapters; the originals that
    merge-on-load keeps to switch back are host RAM (returned, for choose's extra_host_gb)."""
    from wan_demo.model.lora_merge import growth
    from wan_demo.model.loras import memory_terms
    from wan_demo.model.memory.sizes import Tensor

    sizes = memory_weights.with_weights(sizes, weights)  # first: estimate() would replace a bf16 list
    t = sizes["transformer"]
    device_gb, host_gb = memory_terms(settings, t.weights_gb(), growth(weights))
    if device_gb <= 0:
        return sizes, host_gb
    blocks, leaf = max(t.n_blocks, 1), max((x.leaf for x in t.tensors), default=0) + 1
    share = int(device_gb * 1e9 / blocks)
    extra = tuple(Tensor(share // 2, share, False, b if t.n_blocks else -1, leaf + b) for b in range(blocks))
    return {**sizes, "transformer": ComponentSize(t.name, t.tensors + extra, t.n_blocks)}, host_gb


def _local_path(source: str) -> str:
    return os.path.expanduser(source) if source and os.path.exists(os.path.expanduser(source)) else source


def file_weights(transformer_file: str) -> str:
    """The weights a transformer file names (city96 names: ...-Q4_K_M.gguf); bf16 otherwise."""
    if not transformer_file.endswith(".gguf"):
        return "bf16"
    stem = transformer_file.rsplit("/", 1)[-1].removesuffix(".gguf").upper()
    for w in memory_weights.GGUF_WEIGHTS:
        if stem.endswith(w.name.upper()):
            return w.name
    return "Q4_K_M"  # unknown naming: plan for a mid-size file (the loaded file is re-planned)


def prompt_model_gb(settings: Settings) -> float:
    """Host RAM the local prompt model takes when prompt extension may load it: its weight files
    when they are in a local folder, else the default model's estimated size; 0 when it never loads
    (auto mode loads it only from a local folder or the hub cache, and only with CUDA: counted then)."""
    if settings.prompt_extender not in ("local", "auto"):
        return 0.0
    folder = Path(settings.prompt_model)
    if folder.is_dir():
        return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 1e9
    if settings.prompt_extender == "auto":  # auto never downloads a VLM, but loads a hub-cached one
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(settings.prompt_model, "config.json")
        return PROMPT_MODEL_GB if isinstance(cached, str) else 0.0
    return PROMPT_MODEL_GB


QUALITY_ORDER = ("bf16", "Q8_0", "Q6_K", "fp8", "Q5_K_M", "Q4_K_M", "Q3_K_M")  # best first
MIN_SPEED = 0.5  # a plan slower than this vs everything resident is a last resort


def recommend(budget: Budget, sizes, shape: Shape, dims=REAL_DIMS, extra_host_gb: float = 0.0) -> Plan:
    """The plan to recommend for a machine, weights included: the best-quality weights with a
    plan that fits at >= MIN_SPEED (the fastest such plan); else the fastest plan that fits; else
    the plan that overflows least (fits=False). fp8 here is layerwise-casting storage of bf16 weights;
    GGUF plans may also store the text encoder in fp8."""
    from wan_demo.model.memory.plan import host_options

    def plans(weights: str) -> list[Plan]:
        gguf = weights in memory_weights.BY_NAME
        strategies = [s for s in STRATEGIES if gguf or s.fp8 == (weights == "fp8")]
        return [estimate(s, sizes, shape, budget, dims, t, weights if gguf else "bf16", pin, kept,
                         extra_host_gb=extra_host_gb)
                for s in strategies for t in (False, True) for pin, kept in host_options(s)]  # fmt: skip

    every = {w: plans(w) for w in QUALITY_ORDER}
    for weights in QUALITY_ORDER:
        good = [p for p in every[weights] if p.fits and p.speed >= MIN_SPEED]
        if good:
            return max(good, key=lambda p: p.speed)
    fitting = [p for ps in every.values() for p in ps if p.fits]
    if fitting:
        return max(fitting, key=lambda p: p.speed)
    return min((p for ps in every.values() for p in ps), key=overflow)
