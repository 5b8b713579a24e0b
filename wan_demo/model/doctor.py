"""`python app.py --doctor`: what this machine has, what the app would load and how, and what to download.

Reads the torch build, CUDA and each GPU, host RAM, free disk where weights go, which weights are on
disk (a local folder, or the Hugging Face cache), the memory plan it would pick with its VRAM and
host-RAM figures (model.memory: no weights are loaded), and prints the exact download commands for
what is missing. Exit 0 when the configuration can start (on a machine without CUDA and with
--vram-gb given: when it would start on such a card), 1 with the reasons.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from wan_demo.core.settings import REAL_MODEL_ID, Settings

COMPONENTS = ("text_encoder", "image_encoder", "vae", "tokenizer", "scheduler", "image_processor")
# What the Diffusers repo stores per component (fp32), computed from parameter counts x 4 bytes
REPO_GB = {"transformer": 65.6, "text_encoder": 22.7, "image_encoder": 2.5, "vae": 0.5}


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def say(self, label: str, text: str) -> None:
        self.lines.append(f"{label:<18} {text}")


def gpus() -> list[tuple[str, float, float]]:
    """(name, total GB, free GB) per CUDA device."""
    import torch

    out = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        out.append((torch.cuda.get_device_name(i), total / 1e9, free / 1e9))
    return out


def weights_folder(settings: Settings) -> str:
    return REAL_MODEL_ID if settings.model in ("auto", "tiny") else settings.model


def missing_components(model: str, need_transformer: bool) -> list[str]:
    """Components not on disk: in a local folder, or in the hub cache (nothing is downloaded)."""
    wanted = [*COMPONENTS, *(["transformer"] if need_transformer else [])]
    if os.path.isdir(model):
        return [c for c in wanted if not (Path(model) / c).is_dir() or not any((Path(model) / c).iterdir())]
    from huggingface_hub import try_to_load_from_cache

    config = {"tokenizer": "tokenizer_config.json", "scheduler": "scheduler_config.json",
              "image_processor": "preprocessor_config.json"}  # fmt: skip
    found = [c for c in wanted if isinstance(
        try_to_load_from_cache(model, f"{c}/{config.get(c, 'config.json')}"), str)]  # fmt: skip
    return [c for c in wanted if c not in found]


def file_present(source: str) -> bool:
    if not source or os.path.exists(os.path.expanduser(source)):
        return True
    parts = source.split("/")
    if len(parts) < 3:
        return False
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache("/".join(parts[:2]), "/".join(parts[2:])), str)


def free_disk_gb(model: str) -> tuple[str, float]:
    if os.path.isdir(model):
        where = model
    else:
        from huggingface_hub import constants

        where = constants.HF_HUB_CACHE
    probe = Path(where)
    while not probe.exists():
        probe = probe.parent
    return where, shutil.disk_usage(probe).free / 1e9


def diagnose(settings: Settings) -> Report:
    import psutil
    import torch

    r = Report()
    cuda = torch.cuda.is_available()
    r.say(
        "torch",
        f"{torch.__version__} ({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU build'})",
    )
    cards = gpus() if cuda else []
    for i, (name, total, free) in enumerate(cards):
        r.say(f"GPU {i}", f"{name}: {total:.1f} GB, {free:.1f} GB free")
    if not cards:
        r.say("GPU", "none (no CUDA device)" + (": planning for --vram-gb" if settings.vram_gb else ""))
    memory = psutil.virtual_memory()
    r.say("host RAM", f"{memory.total / 1e9:.1f} GB, {memory.available / 1e9:.1f} GB available")
    model = weights_folder(settings)
    where, free = free_disk_gb(model)
    r.say("disk", f"{free:.0f} GB free in {where}")
    hypothetical = bool(settings.vram_gb) and not cuda
    if not cuda and not hypothetical:
        if settings.model in ("auto", "tiny"):
            r.say("would run", "the built-in TINY model on the CPU (random weights: noise videos)")
            r.lines.append(
                "For real videos on a GPU host, or to plan one here: --doctor --vram-gb N --ram-gb M"
            )
            return r
    _plan_and_files(settings, model, free, r)
    return r


def _plan_and_files(settings: Settings, model: str, free_gb: float, r: Report) -> None:
    from wan_demo.model.memory import weights as memory_weights
    from wan_demo.model.memory.estimate import Shape
    from wan_demo.model.memory.start import planned_sizes, prompt_model_gb, read_budget, recommend

    budget = read_budget(settings, "cuda")
    best = recommend(budget, planned_sizes(settings.replace(transformer_file="")), Shape(),
                     extra_host_gb=prompt_model_gb(settings))  # fmt: skip
    file = settings.transformer_file
    if not file and best.weights in memory_weights.BY_NAME:
        file = memory_weights.BY_NAME[best.weights].file
        r.lines.append(f"Recommended for {budget.vram_gb:.0f} GB VRAM + {budget.ram_gb:.0f} GB RAM: the "
                       f"{best.weights} transformer file ({best.quality}).")  # fmt: skip
    chosen = settings.replace(transformer_file=file)
    from wan_demo.model.memory.start import preflight

    try:
        plan = preflight(chosen, "cuda", Shape())
        r.say("plan", plan.summary)
        r.say("host RAM by phase", ", ".join(f"{k} {v:.1f}" for k, v in plan.host.phases.items()) + " GB")
        if plan.notes[1:]:
            r.say("note", "; ".join(plan.notes[1:]))
        if not plan.fits:
            r.problems.append(f"the plan does not fit: too little {plan.limit}")
    except MemoryError as e:
        r.problems.append(str(e))
    _files(chosen, model, file, free_gb, r)


def _files(settings: Settings, model: str, file: str, free_gb: float, r: Report) -> None:
    from wan_demo.model.memory import weights as memory_weights

    missing = missing_components(model, need_transformer=not file)
    r.say(
        "weights",
        f"{model}: " + ("all components present" if not missing else f"missing {', '.join(missing)}"),
    )
    folder = model if os.path.isdir(model) else "./Wan2.1-I2V-14B-480P-Diffusers"
    need_gb = 0.0
    if missing:
        exclude = ' --exclude "transformer/*"' if file else ""
        need_gb += sum(REPO_GB.get(c, 0.0) for c in missing)
        r.commands.append(f"hf download {REAL_MODEL_ID}{exclude} --local-dir {folder}")
        r.problems.append(f"missing weights: {', '.join(missing)}")
    if file and os.path.isfile(os.path.expanduser(file)):
        from wan_demo.model import gguf_layout

        try:
            if file.endswith(".gguf"):
                gguf_layout.read_header(os.path.expanduser(file))
        except (ValueError, OSError, KeyError, IndexError) as e:
            r.problems.append(f"transformer file {file}: not a complete GGUF file ({str(e)[:80]})")
    if file and not file_present(file):
        parts = file.split("/")
        name = parts[-1]
        published = memory_weights.PUBLISHED_GB.get(name.removesuffix(".gguf").rsplit("-", 1)[-1])
        size = f"{published} GB, published by city96" if published else "size: see the repo"
        r.commands.append(
            f"hf download {'/'.join(parts[:2])} {'/'.join(parts[2:])} --local-dir ./gguf  # {size}"
        )
        r.problems.append(f"missing transformer file {file}")
        need_gb += published or 12.0
    env = [f"WAN_DEMO_MODEL={folder}"] + ([f"WAN_DEMO_TRANSFORMER_FILE=./gguf/{file.rsplit('/', 1)[-1]}"]
                                          if file and not os.path.exists(file) else [])  # fmt: skip
    if r.commands:
        r.commands.append(" ".join(env) + " python app.py")
    if need_gb and need_gb > free_gb:
        r.problems.append(f"the downloads need ~{need_gb:.0f} GB, {free_gb:.0f} GB free")


def run(settings: Settings) -> int:
    report = diagnose(settings)
    print("\n".join(report.lines))
    if report.commands:
        print("\nTo download what is missing (then start with the last line):")
        print("\n".join(f"  {c}" for c in report.commands))
    if report.problems:
        print("\nCannot start yet: " + "; ".join(report.problems))
        return 1
    print("\nReady: `python app.py` can start with this configuration.")
    return 0
