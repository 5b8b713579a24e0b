"""Community LoRAs on the pipeline: unfused peft adapters, switched per request, kept warm.

Each LoRA file becomes one adapter named by its content (`lora_<sha256[:16]>`), loaded once through
diffusers' `load_lora_weights` (its key conversion, offload handling and T2V->I2V expansion) and
switched with `set_adapters(names, weights)` beside the fast LoRA: the base weights never reload and
never change, so a request without LoRAs runs exactly the base model (adapters disabled). Loaded
adapters stay warm, least recently used first, within Settings.lora_warm_gb; the memory planner counts
that budget (`memory_terms`). With Settings.lora_merge_after > 0 a set used that many runs in a row is
merged into the weights (model/lora_merge.py) until another set is asked for.

`activate()` is the one place that enables, weights and disables adapters (model/speed.py uses it for
the fast LoRA alone).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import torch

from wan_demo.core.request import InvalidRequest, LoraChoice
from wan_demo.core.settings import Settings
from wan_demo.model.lora_files import LoraFileError, load_state
from wan_demo.model.lora_library import LoraLibrary
from wan_demo.model.lora_merge import Merger, tuner_layers

log = logging.getLogger(__name__)

FAST_ADAPTER = "fast"  # peft adapter name of the step-distilled LoRA (model/speed.py)
GB = 1e9


def adapter_name(sha256: str) -> str:
    return f"lora_{sha256[:16]}"


def adapters_enabled(pipe) -> bool:
    layers = tuner_layers(pipe.transformer)
    return bool(layers) and not layers[0].disable_adapters


def activate(pipe, fast: bool, chosen: list[tuple[str, float]]) -> None:
    """The adapters of one run: the fast LoRA (weight 1) when `fast`, then `chosen` (name, weight) in
    order; none at all = adapters disabled, so the base layers run alone (bit-identical to no LoRA)."""
    names = [FAST_ADAPTER] * fast + [name for name, _ in chosen]
    if not names:
        if adapters_enabled(pipe):
            pipe.disable_lora()
        return
    if not adapters_enabled(pipe):
        pipe.enable_lora()
    pipe.set_adapters(names, adapter_weights=[1.0] * fast + [scale for _, scale in chosen])


@contextmanager
def offload_paused(pipe) -> Iterator[None]:
    """Model offload off while adapters are added, then on again on its own device: diffusers'
    load_lora_weights re-enables it without the device (it then needs an accelerator, so on a CPU
    host loading fails)."""
    device = getattr(pipe, "_offload_device", None) if getattr(pipe, "_all_hooks", None) else None
    if device is None:
        yield
        return
    pipe.remove_all_hooks()
    try:
        yield
    finally:
        pipe.enable_model_cpu_offload(device=device)


def adapters_in_compute_dtype(transformer, state: dict | None = None, adapter: str = "") -> None:
    """peft gives an adapter its base layer's dtype: float8 under fp8 storage, where torch has no
    matmul (and 3 mantissa bits would round the LoRA). Keep adapters in the compute dtype (the storage
    hooks upcast the base layer to it); with the adapter's loaded `state`, its values come from there
    rather than from their float8 copies."""
    compute = transformer.dtype if transformer.dtype.itemsize > 1 else torch.bfloat16
    exact = {}
    for key, value in (state or {}).items():  # transformer.X.lora_A.weight -> X.lora_A.<adapter>.weight
        module, _, kind = key.removeprefix("transformer.").partition(".lora_")
        side, _, leaf = kind.partition(".")
        exact[f"{module}.lora_{side}.{adapter}.{leaf}"] = value
    for name, param in transformer.named_parameters():
        if ".lora_" in name and param.dtype.itemsize == 1 and param.dtype.is_floating_point:
            source = exact.get(name, param.data)
            param.data = source.to(device=param.device, dtype=compute)


def adapter_bytes(transformer, name: str) -> int:
    return sum(
        p.numel() * p.element_size()
        for n, p in transformer.named_parameters()
        if ".lora_" in n and f".{name}." in n + "."
    )


def wrapped(transformer, name: str) -> int:
    """Layers that carry adapter `name`."""
    return sum(1 for m in tuner_layers(transformer) if name in m.lora_A)


class WarmAdapters:
    """Adapters loaded on the transformer, least recently used first, within a byte budget."""

    def __init__(self, budget_bytes: float):
        self.budget = budget_bytes
        self.sizes: OrderedDict[str, int] = OrderedDict()  # adapter name -> bytes
        self.loads = 0  # files loaded so far (a switch between warm sets loads none)

    def ensure(self, pipe, wanted: list[tuple[str, Path, str]]) -> None:
        """Load the (adapter name, file, label) not loaded yet; then evict others beyond the budget."""
        for index, (name, path, label) in enumerate(wanted):
            if name in self.sizes:
                self.sizes.move_to_end(name)
            else:
                self._load(pipe, name, path, f"loras[{index}]", label)
        self._evict(pipe, keep={name for name, _, _ in wanted})

    def _load(self, pipe, name: str, path: Path, field: str, label: str) -> None:
        try:
            state = load_state(path)
        except (LoraFileError, OSError) as e:
            raise InvalidRequest(field, f"{label!r} {e}") from None
        bad = next((k for k, v in state.items() if not torch.isfinite(v).all()), None)
        if bad is not None:
            raise InvalidRequest(
                field, f"{label!r} holds NaN or infinite values ({bad[:60]}): a corrupt file"
            )
        targets = {k.rsplit(".lora_", 1)[0] for k in state}
        try:
            with offload_paused(pipe):
                pipe.load_lora_weights(state, adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as e:
            self._drop(pipe, name)
            raise InvalidRequest(
                field, f"{label!r} cannot be loaded onto this model: {str(e)[:200]}"
            ) from None
        if wrapped(pipe.transformer, name) < len(targets):  # never "loaded, nothing applied"
            found = wrapped(pipe.transformer, name)
            self._drop(pipe, name)
            raise InvalidRequest(field, f"{label!r}: only {found} of its {len(targets)} layers took it")
        adapters_in_compute_dtype(pipe.transformer, state, name)
        self.sizes[name] = adapter_bytes(pipe.transformer, name)
        self.loads += 1
        log.info("LoRA %s loaded as adapter %s (%.1f MB)", label, name, self.sizes[name] / 1e6)

    def _evict(self, pipe, keep: set[str]) -> None:
        for name in list(self.sizes):
            if sum(self.sizes.values()) <= self.budget:
                break
            if name not in keep:
                self._drop(pipe, name)

    def _drop(self, pipe, name: str) -> None:
        if any(name in m.lora_A for m in tuner_layers(pipe.transformer)):
            pipe.delete_adapters([name])
        self.sizes.pop(name, None)

    def held_bytes(self) -> int:
        return sum(self.sizes.values())


class LoraState:
    """An engine's community LoRAs: the library, the warm adapters, the merged set (if any)."""

    def __init__(self, settings: Settings, config: dict | None = None, can_merge: bool = True):
        self.settings = settings
        self.library = LoraLibrary(settings, config)
        self.adapters = WarmAdapters(settings.lora_warm_gb * GB)
        self.merger = Merger(settings.lora_merge_after if can_merge else 0)
        self.current: tuple[bool, tuple[LoraChoice, ...]] = (False, ())  # what the last run used

    def apply(self, pipe, choices: tuple[LoraChoice, ...], fast: bool) -> list[dict]:
        """Put the run's adapters on: resolve and load what is missing, merge or switch, activate.
        Returns what ran, per LoRA, for the metadata (name, sha256, scale, layout, source, applied)."""
        choices = self.library.resolve_all(choices)
        wanted = [(adapter_name(c.sha256), self.library.path_of(c, i), c.name) for i, c in enumerate(choices)]
        self.adapters.ensure(pipe, wanted)
        chosen = [(name, c.scale) for (name, _, _), c in zip(wanted, choices, strict=True)]
        activate(pipe, fast, chosen)  # every chosen adapter at its weight: the merge reads these scalings
        merged = self.merger.update(pipe, chosen)
        activate(pipe, fast, [(n, s) for n, s in chosen if n not in merged])
        self.current = (fast, choices)
        return [
            describe(c, merged.get(name, "unfused adapter"))
            for (name, _), c in zip(chosen, choices, strict=True)
        ]

    def held_bytes(self) -> int:
        return self.adapters.held_bytes()


def describe(choice: LoraChoice, applied: str) -> dict:
    """One LoRA in a video's metadata; an URL source loses its query (it may carry a token)."""
    source = choice.source
    if source.startswith("https://"):
        parts = urlsplit(source)
        source = f"https://{parts.netloc}{parts.path}"
    return dict(name=choice.name, sha256=choice.sha256, scale=choice.scale, layout=choice.layout,
                source=source, applied=applied)  # fmt: skip


def memory_terms(settings: Settings, transformer_gb: float, growth: float = 0.0) -> tuple[float, float]:
    """(device GB, host GB) the LoRA machinery may hold beyond the base weights, for the planner:
    the warm adapters (Settings.lora_warm_gb) on the transformer's device; with merge-on-load, the
    original blocks kept on the host to switch back (at most every linear: the transformer's size) and
    the growth of blocks requantized to a larger type (`growth`: share of bytes, lora_merge.growth)."""
    if settings.lora_merge_after <= 0:
        return settings.lora_warm_gb, 0.0
    return settings.lora_warm_gb + transformer_gb * growth, transformer_gb
