"""Print the memory planner's choice for common cards: python -m bench.memory_plan

Sizes come from the real Wan2.1-I2V-14B-480P component configs instantiated on the meta device
(no weights, no network); activations for one 81-frame 480x832 segment (a 10 s clip is two).
"""

from __future__ import annotations

from wan_demo.model.memory import Budget, choose
from wan_demo.model.memory_estimate import TRANSFORMER_CONFIG, VAE_CONFIG, Shape, real_sizes

CARDS_GB = (80, 48, 24, 16, 12, 8)
HOST_RAM_GB = (64, 32)
REAL_DIMS = (
    TRANSFORMER_CONFIG["num_attention_heads"] * TRANSFORMER_CONFIG["attention_head_dim"],
    TRANSFORMER_CONFIG["ffn_dim"],
    VAE_CONFIG["base_dim"],
)


def rows(shape: Shape) -> list[dict]:
    sizes = real_sizes()
    out = []
    for vram in CARDS_GB:
        for ram in HOST_RAM_GB:
            plan = choose(Budget(vram, ram, "bench"), sizes, shape, REAL_DIMS)
            out.append(dict(vram=vram, ram=ram, plan=plan))
    return out


def main() -> None:
    sizes = real_sizes()
    print("Components (meta device, real configs):")
    for s in sizes.values():
        print(f"  {s.name:14s} {s.params / 1e9:6.2f} B params  {s.weights_gb():5.1f} GB as loaded")
    shape = Shape()
    print(f"Segment: {shape.num_frames} frames at {shape.height}x{shape.width} = {shape.tokens} tokens\n")
    columns = f"{'card':>5} | {'host RAM':>8} | {'strategy':<40} | {'peak VRAM':>9} | {'host RAM est':>12}"
    header = f"| {columns} | speed |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows(shape):
        p = r["plan"]
        name = p.strategy.name + (" + VAE tiling" if p.vae_tiling else "")
        if not p.fits:
            name = f"TOO LITTLE {p.limit.upper()} ({name})"
        print(
            f"| {r['vram']:>3} GB | {r['ram']:>5} GB | {name:<40} | {p.peak_vram_gb:>6.1f} GB"
            f" | {p.host_ram_gb:>9.1f} GB | {p.speed:.2f}x |"
        )
    print("\nspeed = expected speed relative to everything resident (estimate, not measured).")
    notes = {n for r in rows(shape) for n in r["plan"].notes}
    for n in sorted(notes):
        print(f"note (32 GB host RAM rows): {n}")


if __name__ == "__main__":
    main()
