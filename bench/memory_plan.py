"""The memory plan for every common machine: python -m bench.memory_plan

Cards 8-80 GB x host RAM 16/32/64 GB. Sizes come from the real Wan2.1-I2V-14B-480P component configs
on the meta device (no weights, no network), GGUF sizes from the types' block sizes (estimated);
activations for one 81-frame 480x832 segment (a 10 s clip is two) from the per-token constant that
bench/activations.py measured on the CPU. Each row names the weights, the placement, the estimated
peaks and speed, and the quality cost (memory_start.recommend).
"""

from __future__ import annotations

from wan_demo.model.memory import Budget
from wan_demo.model.memory_estimate import ACT_BYTES_PER_TOKEN, Shape, real_sizes
from wan_demo.model.memory_start import recommend

CARDS_GB = (80, 48, 24, 16, 12, 8)
HOST_RAM_GB = (64, 32, 16)
# Figures measured on this CPU (bench/activations.py, bench/load.py), shown beside the estimates
MEASURED_ACT_MIB_PER_1K_TOKENS = 123.7  # one real-width block, bf16, peak RSS above the weights
MEASURED_LOAD_PEAK_OVER_FINAL_GB = 0.0  # GGUF loader, reduced-depth real-width file (bench/load.py)


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
    act = shape.tokens * ACT_BYTES_PER_TOKEN / 1e9
    measured = shape.tokens * MEASURED_ACT_MIB_PER_1K_TOKENS / 1000 * 2**20 / 1e9
    print(f"Segment: {shape.num_frames} frames at {shape.height}x{shape.width} = {shape.tokens} tokens")
    print(f"Transformer activations: est. {act:.2f} GB; measured on CPU (fitted line): {measured:.2f} GB\n")
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
