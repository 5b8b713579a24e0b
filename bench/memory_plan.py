"""The memory plan for every common machine: python -m bench.memory_plan [--rehearsal results.json]

Cards 8-80 GB x host RAM 16/32/64 GB, one 81-frame 480x832 segment (a 10 s clip is two, one after
the other). Sizes: the real component configs on the meta device and city96's GGUF layout, tensor by
tensor (model/memory/sizes.py, gguf_layout.py: computed); activations from the constants
bench/activations.py measured on the CPU; host RAM per phase as each plan is applied
(model/memory/host.py: computed, with the CPU baseline measured by bench/rehearsal.py and the CUDA
runtime's share estimated). Each row: the weights, the plan, the estimated peaks, the speed and the
quality cost (model.memory.start.recommend). With --rehearsal, the host RAM the full-size rehearsal
measured on the CPU (plus the computed pinned bytes) stands beside the estimate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wan_demo.model.memory import host
from wan_demo.model.memory import weights as memory_weights
from wan_demo.model.memory.estimate import (
    MEASURED_ACTIVATIONS_MIB,
    MEASURED_VAE_MIB,
    Shape,
    transformer_activations_gb,
    vae_activations_gb,
)
from wan_demo.model.memory.plan import Budget
from wan_demo.model.memory.sizes import real_sizes
from wan_demo.model.memory.start import recommend

CARDS_GB = (80, 48, 24, 16, 12, 8)
# The full-size rehearsals' peaks (measured on CPU + computed pinned bytes, GB, CUDA runtime left out):
# python -m bench.rehearsal --json; the runs' per-phase results beside it (rehearsal-<row>.json)
REHEARSAL = Path(__file__).parent / "results" / "rehearsal.json"
HOST_RAM_GB = (64, 32, 16)


def row(vram: int, ram: int, shape: Shape, measured: dict) -> str:
    p = recommend(Budget(vram, ram, "bench"), real_sizes(), shape)
    verdict = "runs" if p.fits else f"TOO LITTLE {p.limit.upper()} (nearest)"
    extras = "".join(
        f" + {o}" for o in (["VAE tiling"] if p.vae_tiling else []) + ([p.options] if p.options else [])
    )
    seen = measured.get(f"{vram}x{ram}")
    rehearsal = f"{seen:.1f} measured on CPU + pinned" if seen else "-"
    return (
        f"| {vram} GB | {ram} GB | {verdict} | {p.weights} | {p.strategy.name}{extras} | "
        f"{p.peak_vram_gb:.1f} | "
        f"{p.host_ram_gb:.1f} ({p.host.peak_phase}) | {rehearsal} | {p.host.pinned_gb:.1f} | "
        f"{p.host.page_cache_gb:.1f}{' (re-read each step)' if p.streams_from_disk else ''} | "
        f"{p.speed:.2f}x | {p.quality} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rehearsal", default=str(REHEARSAL), help="JSON written by bench.rehearsal --json")
    a = parser.parse_args()
    measured = json.loads(Path(a.rehearsal).read_text()) if a.rehearsal else {}
    sizes = real_sizes()
    print("Components (meta device, real configs; pinned = torch's power-of-two pinned copies):")
    for s in sizes.values():
        pinned = f"pinned {s.pinned_gb():5.1f} / {s.pinned_gb(True):5.1f} GB"
        print(f"  {s.name:14s} {s.params / 1e9:6.2f} B params  {s.weights_gb():5.1f} GB as loaded, "
              f"{s.weights_gb(True):5.1f} GB in fp8, {pinned}")  # fmt: skip
    print("\nGGUF transformer files (city96's layout: computed; published by city96 where listed):")
    for w in memory_weights.GGUF_WEIGHTS:
        t = memory_weights.transformer_size(w.name)
        published = memory_weights.PUBLISHED_GB.get(w.name)
        listed = f", {published} GB published" if published else ""
        print(f"  {w.name:7s} {t.weights_gb():5.2f} GB as loaded (computed: plain tensors in bf16){listed}, "
              f"pinned copy {t.pinned_gb():5.2f} GB")  # fmt: skip
    shape = Shape()
    print(f"\nSegment: {shape.num_frames} frames at {shape.height}x{shape.width} = {shape.tokens} tokens")
    print("| activations | tokens | est. GB | measured on CPU GB |")
    print("|---|---|---|---|")
    for tokens, mib in MEASURED_ACTIVATIONS_MIB:
        est = transformer_activations_gb(Shape(num_frames=4 * (tokens // 1560) - 3), 5120, 13824)
        print(f"| transformer block | {tokens} | {est:.2f} | {mib * 2**20 / 1e9:.2f} |")
    full = transformer_activations_gb(shape, 5120, 13824)
    print(f"| transformer block, 81x480x832 | {shape.tokens} | {full:.2f} | - (fitted line) |")
    for kind, mib in MEASURED_VAE_MIB.items():
        est = vae_activations_gb(shape, 96, kind == "tiled")  # "tiled" is also in "untiled"
        print(f"| VAE {kind}, 81 frames 480x832 | - | {est:.2f} | {mib * 2**20 / 1e9:.2f} |")
    print(f"\nHost baseline: {host.CPU_BASELINE_GB:.1f} GB measured on CPU (the app's imports) + "
          f"{host.CUDA_HOST_GB:.1f} GB CUDA runtime (estimated)\n")  # fmt: skip
    print("| card | host RAM | verdict | weights | plan | est. peak VRAM GB | est. host RAM GB "
          "(peak phase) | rehearsal GB | est. pinned GB | est. page cache GB | est. speed "
          "| quality cost |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for vram in CARDS_GB:
        for ram in HOST_RAM_GB:
            print(row(vram, ram, shape, measured))
    print(
        "\nest. = computed/estimated by the planner (no GPU here). speed = relative to everything resident in"
    )
    print("bf16 on the same card (estimated). Page cache: the GGUF file's pages each step reads; when they")
    print("do not fit beside the process, each step reads the file from disk again.")


if __name__ == "__main__":
    main()
