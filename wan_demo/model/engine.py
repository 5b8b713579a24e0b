"""Load the Wan I2V pipeline once: the built-in tiny model or real weights (hub id or folder).

The Engine is the loaded pipeline plus what callers need to know about it. Loading runs the memory
plan (model.memory) and the start-up speed levers (model.speed_setup) once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wan_demo.core.plan import DEFAULT_COST, CostModel, EngineInfo
from wan_demo.core.settings import MAX_AREA, REAL_MODEL_ID, Settings
from wan_demo.model.embed_cache import ImageEmbedCache
from wan_demo.model.text_cache import PromptEmbeddings

log = logging.getLogger(__name__)

TINY_BANNER = (
    "No CUDA GPU (or WAN_DEMO_MODEL=tiny): running the built-in TINY model with random weights. "
    "Its videos are noise; it exists to exercise the full pipeline. "
    f"Set WAN_DEMO_MODEL={REAL_MODEL_ID} (or a local folder) on a GPU host for real videos."
)


ProgressFn = Callable[[str, float], None]  # (stage in words, fraction of the load's steps done)
# load_engine's steps, in order (what the banner shows while the page waits for the model)
STAGES = (
    "importing torch and diffusers",
    "loading the weights",
    "placing the weights (memory plan)",
    "speed set-up (LoRA, step cache, compile)",
)


def expected_info(settings: Settings) -> EngineInfo:
    """What the settings will load, known without torch (submits are planned with it while the
    model loads; the worker re-plans with the loaded one). "auto" is the real model where a CUDA
    driver is visible (or on ZeroGPU), the tiny one elsewhere, as choose_device + wants_tiny decide."""
    zero_gpu = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
    driver = os.path.exists("/proc/driver/nvidia/version")
    cuda = settings.device.startswith("cuda") or (settings.device == "auto" and (driver or zero_gpu))
    auto = settings.model == "auto"
    tiny = settings.model == "tiny" or (auto and not cuda and not settings.transformer_file)
    area = settings.tiny_max_area if tiny else MAX_AREA
    name = "the built-in TINY model" if tiny else (REAL_MODEL_ID if auto else settings.model)
    return EngineInfo(area, bool(settings.lora), DEFAULT_COST, tiny, f"Loading {name}")


class ModelUnavailable(RuntimeError):
    """The requested weights cannot be loaded (not cached and no network, or a bad folder)."""


@dataclass
class Engine:
    """The one loaded pipeline and what callers need to know about it."""

    pipe: Any  # diffusers.WanImageToVideoPipeline
    model_name: str  # hub id, folder, or the tiny model's name
    is_tiny: bool
    device: str  # where sampling runs: "cuda:<index>" | "cpu"
    max_area: int  # output pixel budget (480*832 for the real model)
    memory_plan: str = "resident"  # human-readable strategy, shown in the UI banner
    weights: str = ""  # human-readable weight formats, e.g. "transformer Q4_K (GGUF), text encoder fp8"
    fast_available: bool = False  # step-distilled LoRA loaded (fast mode possible)
    details: dict[str, Any] = field(default_factory=dict)  # versions, dtype, plan details
    parallel: Any = None  # distributed Group on rank 0 of a multi-GPU torchrun run, else None
    cost: CostModel = DEFAULT_COST  # seconds per forward etc.; the Worker refines it from real runs
    prompts: PromptEmbeddings = field(default_factory=PromptEmbeddings)  # encoded once per prompt
    image_embeds: ImageEmbedCache = field(default_factory=ImageEmbedCache)  # CLIP, once per picture
    loras: Any = None  # model.loras.LoraState: community LoRAs (library, warm adapters, merged set)

    @property
    def banner(self) -> str:
        text = TINY_BANNER if self.is_tiny else f"Model: {self.model_name} on {self.device}"
        weights = f" | weights: {self.weights}" if self.weights else ""
        return f"{text}{weights} | memory: {self.memory_plan}"

    def plan_info(self) -> EngineInfo:
        return EngineInfo(self.max_area, self.fast_available, self.cost, self.is_tiny, self.banner)


def choose_device(settings: Settings) -> str:
    import torch

    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":  # pin the index: diffusers' offload turns a bare "cuda" into GPU 0 on every rank
        device = f"cuda:{torch.cuda.current_device()}"
    return device


def wants_tiny(settings: Settings, device: str) -> bool:
    """Explicit setting wins; `auto` means the real model on CUDA and the tiny one elsewhere."""
    if settings.model == "tiny":
        if settings.transformer_file:  # never a silent fall back to the tiny model
            raise ValueError(
                "transformer_file is set but model is 'tiny': set WAN_DEMO_MODEL to the diffusers repo "
                f"or folder the file belongs to (e.g. {REAL_MODEL_ID}), or unset WAN_DEMO_TRANSFORMER_FILE"
            )
        return True
    # auto = the real model on CUDA; elsewhere too when real weights were asked for
    return settings.model == "auto" and not device.startswith("cuda") and not settings.transformer_file


def transformer_config(settings: Settings, tiny: bool | None = None) -> dict:
    """The transformer config of the model `settings` name, without loading it (an API node checks
    LoRA files against it): the tiny model's, a folder's config.json, the real model's known config,
    or a hub repo's config.json. `tiny`: whether the served model is the tiny one (an API node knows
    it from its workers); None = as load_engine would decide here."""
    from wan_demo.model.memory.estimate import TRANSFORMER_CONFIG

    if wants_tiny(settings, choose_device(settings)) if tiny is None else tiny:
        from wan_demo.model.tiny import TRANSFORMER_CONFIG as TINY

        return dict(TINY)
    model = REAL_MODEL_ID if settings.model == "auto" else settings.model
    if os.path.isfile(os.path.join(model, "transformer", "config.json")):
        with open(os.path.join(model, "transformer", "config.json")) as f:
            return json.load(f)
    if model == REAL_MODEL_ID:
        return dict(TRANSFORMER_CONFIG)
    from diffusers import WanTransformer3DModel

    try:
        config = WanTransformer3DModel.load_config(
            model, subfolder="transformer", local_files_only=settings.offline
        )
    except (OSError, ValueError):
        return dict(TRANSFORMER_CONFIG)  # a repo that cannot be read now: the 14B model's widths
    return dict(config)


def load_engine(settings: Settings, plan: Any = None, on_progress: ProgressFn | None = None) -> Engine:
    """Load the pipeline once: tiny in-process model, or real weights from hub cache / folder.

    Real weights: the memory plan comes first (`preflight` on a GPU, from the real configs and the
    transformer file), so each component loads straight to where the plan puts it. `plan` hands in a
    plan to load and apply as given (bench/rehearsal.py applies a GPU plan on the CPU).
    `on_progress(stage, fraction)` is called as each step starts (fraction = steps done / steps,
    not a time estimate: the weights take most of the time)."""
    report = on_progress or (lambda _stage, _fraction: None)
    report(STAGES[0], 0.0)
    import diffusers
    import torch
    import transformers

    from wan_demo.model import speed_setup, torchrun
    from wan_demo.model.lora_merge import merge_possible
    from wan_demo.model.loras import LoraState
    from wan_demo.model.memory import apply as memory_apply
    from wan_demo.model.memory import start as memory_start
    from wan_demo.model.memory.estimate import Shape

    device = choose_device(settings)
    ranks, ranks_per_host = torchrun.ranks_from_env()  # torchrun: GPUs sharing each segment
    shape = Shape(ranks=ranks)
    report(STAGES[1], 1 / len(STAGES))
    if wants_tiny(settings, device):
        from wan_demo.model.tiny import TINY_MODEL_NAME, build_tiny_pipeline

        log.warning(TINY_BANNER)
        pipe = build_tiny_pipeline().to(device)
        engine = Engine(pipe, TINY_MODEL_NAME, True, device, settings.tiny_max_area)
    else:
        model = REAL_MODEL_ID if settings.model == "auto" else settings.model
        if plan is None and device.startswith(
            "cuda"
        ):  # plan before loading: fail fast, load to the final place
            try:
                plan = memory_start.preflight(settings, device, shape, ranks_per_host)
            except MemoryError as e:
                raise ModelUnavailable(f"Cannot start: {e}") from None
        pipe = load_real_pipeline(model, settings, plan, device)
        engine = Engine(pipe, model, False, device, MAX_AREA)
    pipe.set_progress_bar_config(disable=True)
    engine.image_embeds.install(pipe)  # a re-roll of the same picture skips the CLIP encoder
    report(STAGES[2], 2 / len(STAGES))
    plan = plan or memory_start.plan_for(pipe, settings, device, shape, ranks_per_host)
    memory_apply.apply_plan(pipe, plan, device, getattr(torch, settings.dtype))
    if not plan.layout.te_kept:  # loaded for an encode, freed after it
        from wan_demo.model.text_encoder import OnDemand

        engine.prompts.encoder = OnDemand(engine.model_name, settings, plan, device)
    engine.memory_plan, engine.details["memory"] = plan.summary, plan.info()
    engine.details["weights"] = memory_apply.weights_info(pipe, plan)
    engine.weights = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in engine.details["weights"].items()
                               if k in ("transformer", "text_encoder"))  # fmt: skip
    report(STAGES[3], 3 / len(STAGES))
    fast = speed_setup.setup(pipe, settings)  # LoRA, cache, attention backend, compile + warm-up
    engine.fast_available, engine.details["speed"] = fast.fast_available, fast.info()
    engine.loras = LoraState(settings, dict(pipe.transformer.config), can_merge=merge_possible(plan.strategy))
    engine.details.update(
        torch=torch.__version__, diffusers=diffusers.__version__, transformers=transformers.__version__
    )
    return engine


def load_real_pipeline(model: str, settings: Settings, plan: Any = None, device: str = "cpu"):
    """diffusers' recipe: image encoder and VAE in fp32, transformer and text encoder in `dtype`.

    With a `plan`, the transformer and the text encoder load straight to where it places them, in
    the dtype it stores them in (the text encoder: model/text_encoder.py, fp8 without a bf16 copy
    first), tensor by tensor: never all of a component staged in host RAM; a text encoder the plan
    does not keep is not loaded here. Without one (a CPU host), diffusers loads them all in `dtype`."""
    import torch
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    from wan_demo.model.gguf import WeightsFileError
    from wan_demo.model.load import load_transformer_file

    dtype = getattr(torch, settings.dtype)
    local = os.path.isdir(model)
    placement = plan.layout.placement if plan is not None else {}
    target = device if placement.get("transformer") == "gpu" else None
    try:
        parts = {}
        if settings.transformer_file:  # replaces the repo's transformer, which is then never read
            parts["transformer"] = load_transformer_file(
                settings.transformer_file, model, settings, device=target
            )
        elif target is not None:
            parts["transformer"] = WanTransformer3DModel.from_pretrained(
                model, subfolder="transformer", torch_dtype=dtype, device_map=target,
                local_files_only=settings.offline or local,
            )  # fmt: skip
        if plan is not None:
            parts["text_encoder"] = None
            if plan.layout.te_kept:
                from wan_demo.model.text_encoder import load_text_encoder

                where = device if placement["text_encoder"] == "gpu" else "cpu"
                parts["text_encoder"] = load_text_encoder(
                    model, plan.layout.fp8["text_encoder"], where, dtype, settings.offline or local
                )
        return WanImageToVideoPipeline.from_pretrained(
            model,
            dtype={"image_encoder": torch.float32, "vae": torch.float32, "default": dtype},
            local_files_only=settings.offline or local,
            **parts,
        )
    except WeightsFileError as e:
        raise ModelUnavailable(f"Cannot start: {e}") from None
    except (OSError, ValueError) as e:
        where = f"folder {model!r}" if local else f"hub repo {model!r}"
        raise ModelUnavailable(
            f"Cannot load the Wan I2V weights from {where}: {e.__class__.__name__}: {str(e)[:300]}\n"
            f"Get them with `hf download {REAL_MODEL_ID} --local-dir ./Wan2.1-I2V-14B-480P-Diffusers` "
            "and set WAN_DEMO_MODEL to that folder, or run with WAN_DEMO_MODEL=tiny for the built-in "
            "test model."
        ) from None
