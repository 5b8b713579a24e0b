"""The memory plan for every common machine: python -m bench.memory_plan

Cards 8-80 GB x host RAM 16/32/64 GB. Sizes come from the real Wan2.1-I2V-14B-480P component configs
on the meta device (no weights, no network), GGUF sizes from the types' block sizes (estimated);
activations for one 81-frame 480x832 segment (a 10 s clip is two) from the per-token constant that
bench/activations.py measured on the CPU. Each row names the weights, the placement, the estimated
peaks and speed, and the quality cost (memory_start.recommend).
"""

from __future__ import annotations

from bench.activations import fit
from wan_demo.model.memory.estimate import (
    MEASURED_ACTIVATIONS_MIB,
    MEASURED_VAE_MIB,
    Shape,
    real_sizes,
    transformer_activations_gb,
    vae_activations_gb,
)
from wan_demo.model.memory.plan import LOAD_SLACK_GB, MEASURED_LOAD_OVERHEAD_GB, Budget
from wan_demo.model.memory.start import recommend

CARDS_GB = (80, 48, 24, 16, 12, 8)
HOST_RAM_GB = (64, 32, 16)


def row(vram: int, ram: int, shape: Shape) -> str:
    p = recommend(Budget(vram, ram, "bench"), real_sizes(), shape)
    name = p.strategy.name + (" + VAE tiling" if p.vae_tiling else "")
    verdict = "runs" if p.fits else f"TOO LITTLE {p.limit.upper()} (nearest)"
    return (
        f"| {vram} GB | {ram} GB | {verdict} | {p.weights} | {name} | {p.peak_vram_gb:.1f} | "
        f"{p.load_host_gb:.1f} | {p.host_ram_gb:.1f} | {p.speed:.2f}x | {p.quality} |"
    )


def main() -> None:
    sizes = real_sizes()
    print("Components (meta device, real configs):")
    for s in sizes.values():
        print(f"  {s.name:14s} {s.params / 1e9:6.2f} B params  {s.weights_gb():5.1f} GB as loaded")
    shape = Shape()
    print(f"Segment: {shape.num_frames} frames at {shape.height}x{shape.width} = {shape.tokens} tokens\n")
    print("| transformer activations, one block | tokens | est. GB | measured on CPU GB |")
    print("|---|---|---|---|")
    for tokens, mib in MEASURED_ACTIVATIONS_MIB:
        est = transformer_activations_gb(Shape(num_frames=4 * (tokens // 1560) - 3), 5120, 13824)
        print(f"| measured point | {tokens} | {est:.2f} | {mib * 2**20 / 1e9:.2f} |")
    slope, intercept = fit([(t, m * 2**20) for t, m in MEASURED_ACTIVATIONS_MIB])
    line = (slope * shape.tokens + intercept) / 1e9
    print(f"| 81x480x832 segment | {shape.tokens} | {transformer_activations_gb(shape, 5120, 13824):.2f} | "
          f"{line:.2f} (fitted line) |")  # fmt: skip
    for kind, mib in MEASURED_VAE_MIB.items():
        est = vae_activations_gb(shape, 96, kind == "tiled")
        print(f"| VAE decode 480x832, {kind} | - | {est:.2f} | {mib * 2**20 / 1e9:.2f} |")
    print(
        f"| loader: host RAM in flight | - | {LOAD_SLACK_GB:.1f} | {MEASURED_LOAD_OVERHEAD_GB:.2f} "
        "(peak - final RSS, bench/load.py) |\n"
    )
    print("| card | host RAM | verdict | weights | placement | est. peak VRAM GB | est. host RAM "
          "loading GB | est. host RAM running GB | est. speed | quality cost |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for vram in CARDS_GB:
        for ram in HOST_RAM_GB:
            print(row(vram, ram, shape))
    print("\nest. = estimated by the planner (no GPU here). speed = relative to everything resident in")
    print("bf16 on the same card (GGUF dequantizes per layer: ~0.9-0.95x, estimated). Loading: weights")
    print("stream from disk to their place; est. = running + 2 GB in flight.")


if __name__ == "__main__":
    main()
