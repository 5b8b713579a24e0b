"""Host RAM of a memory plan as it is applied, phase by phase: load -> apply -> encode -> denoise -> decode.

What each placement keeps in host memory (GB; `W` = the component's weights as stored):
- gpu: nothing after loading (the transformer and the text encoder load straight to the device);
- offload (model offload), sequential, cpu: W, pageable;
- group_block / group_leaf, pinning "upfront" (diffusers' default with CUDA streams): a pinned copy of
  every tensor, each rounded up to a power of two (sizes.pinned_bytes). diffusers makes all of a
  component's copies before the first group swaps onto them, so while applying the plan the loaded
  originals and the pinned copies exist together;
- group_*, pinning "lazy" (`low_cpu_mem_usage=True`): W as loaded, plus pinned copies of the groups
  in flight (the running one and the prefetched next one), made per step;
- weights that are views of their file's mapping (a GGUF transformer's quantized tensors,
  model/gguf.py; CLIP and the VAE, which load in their files' dtype): file pages, which the kernel can
  drop and read again, not process memory. Under lazy pinning or on the CPU they stay that way
  (`page_cache_gb`: the file pages a run reads); model offload and upfront pinning copy them into
  process memory, a GPU placement moves them off the host;
- a text encoder the plan does not keep (`te_kept=False`) is loaded for an encode and freed after it;
  the prompt-embedding cache makes that rare (a new prompt), the first request pays the first load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wan_demo.model.memory.sizes import ComponentSize

GROUPS = ("group_block", "group_leaf")
# Process memory before any weights: Python, torch, diffusers, transformers, Gradio and the app's
# anonymous memory after the start-up imports, measured on CPU by bench/rehearsal.py (0.25 GB); the
# shared libraries' code is file pages (LIBRARIES_GB, page cache). CUDA_HOST_GB is estimated: the
# CUDA runtime, cuBLAS and cuDNN map their kernels and the context into host memory.
CPU_BASELINE_GB = 0.25
LIBRARIES_GB = 0.6
CUDA_HOST_GB = 1.5
# Loading: one tensor in its source dtype besides what is already loaded (large ones in row chunks).
LOAD_TRANSIENT_GB = 0.5


@dataclass(frozen=True)
class HostUse:
    phases: dict[str, float]  # phase -> GB, baseline included
    pinned_gb: float  # pinned while running (computed with the rounding rule)
    page_cache_gb: float  # file pages a run reads: libraries, mapped weights (reclaimable, re-read)
    pinned_by_phase: dict[str, float] = field(default_factory=dict)  # the pinned part of each phase

    @property
    def peak_gb(self) -> float:
        return max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.get)


@dataclass(frozen=True)
class Layout:
    """How a plan holds the weights: per component placement and fp8, how group offload pins."""

    placement: dict[str, str]
    fp8: dict[str, bool]
    pinning: str = "upfront"  # "upfront" | "lazy"; only group placements pin
    te_kept: bool = True  # False: the text encoder is loaded for an encode and freed after it
    mapped: bool = False  # the transformer is a GGUF file (its quantized tensors: views of the mapping)


def host_use(sizes: dict[str, ComponentSize], layout: Layout, baseline_gb: float,
             extra_gb: float = 0.0) -> HostUse:  # fmt: skip
    """Host RAM per phase. `extra_gb`: other residents (the local prompt model, ...)."""
    steady = {n: _steady(n, s, layout) for n, s in sizes.items()}
    base = baseline_gb + extra_gb
    loaded = {n: _loaded(n, s, layout) for n, s in sizes.items()}
    pinned = {n: _pinned(n, s, layout) for n, s in sizes.items()}
    te, te_load = sizes.get("text_encoder"), 0.0
    if te is not None and not layout.te_kept:
        te_load = te.weights_gb(layout.fp8["text_encoder"]) + LOAD_TRANSIENT_GB
    held = sum(pinned.values())  # pinned copies held while running (upfront pinning)
    flying = {p: _in_flight(n, sizes, layout) for p, n in
              (("encode", "text_encoder"), ("denoise", "transformer"), ("decode", "vae"))}  # fmt: skip
    phases = {
        "load": base + sum(loaded.values()) + LOAD_TRANSIENT_GB,
        "apply": base + sum(loaded.values()) + held,
        "encode": base + sum(steady.values()) + te_load + flying["encode"],
        "denoise": base + sum(steady.values()) + flying["denoise"],
        "decode": base + sum(steady.values()) + flying["decode"],
    }
    pinned_by_phase = {"load": 0.0, "apply": held, **{p: held + f for p, f in flying.items()}}
    page_cache = LIBRARIES_GB + sum(s.mapped_gb() for n, s in sizes.items() if _stays_mapped(n, layout))
    return HostUse({k: round(v, 2) for k, v in phases.items()}, round(held, 2), round(page_cache, 2),
                   {k: round(v, 2) for k, v in pinned_by_phase.items()})  # fmt: skip


def _lazy(name: str, layout: Layout) -> bool:
    return layout.placement[name] in GROUPS and layout.pinning == "lazy"


def _steady(name: str, size: ComponentSize, layout: Layout) -> float:
    """Process memory a component keeps while the pipeline runs."""
    where, fp8 = layout.placement[name], layout.fp8[name]
    if where == "gpu" or (name == "text_encoder" and not layout.te_kept):
        return 0.0
    if where in GROUPS and layout.pinning == "upfront":
        return size.pinned_gb(fp8, _level(where))
    if _stays_mapped(name, layout):
        return size.weights_gb(fp8) - size.mapped_gb()  # file pages
    return size.weights_gb(fp8)


def _stays_mapped(name: str, layout: Layout) -> bool:
    """Its file views stay file views while running: on the CPU, or group-offloaded with lazy pinning."""
    return layout.placement[name] == "cpu" or _lazy(name, layout)


def _loaded(name: str, size: ComponentSize, layout: Layout) -> float:
    """Process memory a component takes once loaded, before the plan is applied."""
    where = layout.placement[name]
    if name == "text_encoder" and not layout.te_kept:
        return 0.0  # loaded at the first encode
    if where == "gpu" and name in ("transformer", "text_encoder"):
        return 0.0  # straight to the device, tensor by tensor
    if name == "transformer" and not layout.mapped:
        return size.weights_gb()  # loaded in its compute dtype; fp8 storage is applied after loading
    return size.weights_gb(layout.fp8[name]) - size.mapped_gb()  # file views are not loaded into memory


def _pinned(name: str, size: ComponentSize, layout: Layout) -> float:
    if layout.placement[name] not in GROUPS or layout.pinning != "upfront":
        return 0.0
    if name == "text_encoder" and not layout.te_kept:
        return 0.0
    return size.pinned_gb(layout.fp8[name], _level(layout.placement[name]))


def _level(placement: str) -> str:
    return "block" if placement == "group_block" else "leaf"


def _in_flight(name: str, sizes: dict[str, ComponentSize], layout: Layout) -> float:
    """Pinned copies lazy pinning makes for the groups in flight while `name` runs (the running one
    and the prefetched next one: at most the two largest)."""
    if name not in sizes or not _lazy(name, layout):
        return 0.0
    return sizes[name].in_flight_pinned_gb(_level(layout.placement[name]), layout.fp8[name])
