"""Count transformer forwards per speed mode and step cache on the tiny model, and which steps the
cache skipped: python -m bench.forwards

Runs the real path (wan_demo.generate.generate) on one engine: quality (40 steps + CFG) with no
cache, with FirstBlockCache (default threshold) and with MagCache (the published Wan2.1 I2V 480P
ratios, the authors' defaults), and fast (4 steps, CFG off, with a LoRA made here with peft on the
tiny transformer, standing in for the lightx2v LoRA). "calls" counts transformer forward calls;
"computed" counts those that ran the last block (a cache skips it). Wall time on the tiny model is
mostly the VAE and the machine's load, not the transformer: the forward counts are the figure.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

AREA = 64 * 64  # tiny output keeps the run short; forward counts do not depend on size


def write_tiny_lora(folder: Path) -> Path:
    """A random LoRA on the tiny transformer's attention projections, saved as diffusers LoRA."""
    from bench.lora_files import write_peft
    from wan_demo.model.tiny import build_tiny_pipeline

    transformer = build_tiny_pipeline(seed=1).transformer
    return write_peft(transformer, folder, ["to_q", "to_k", "to_v", "to_out.0"], name="fast")


class ForwardCounter:
    """Transformer forward calls, and whether each ran its last block (a step cache skips it).
    With CFG the pipeline calls the transformer twice per step, conditional first."""

    def __init__(self, transformer):
        self.calls = self.computed = 0
        self.log: list[bool] = []  # per call: the last block ran
        transformer.register_forward_pre_hook(lambda *_: self._call())
        transformer.blocks[-1].ffn.register_forward_hook(lambda *_: self._ran())

    def _call(self) -> None:
        self.calls += 1
        self.log.append(False)

    def _ran(self) -> None:
        self.computed += 1
        self.log[-1] = True

    def reset(self) -> None:
        self.calls = self.computed = 0
        self.log = []

    def skipped_steps(self, cfg: bool = True, branch: int = 0) -> list[int]:
        """Indices of the steps whose call for `branch` (0 = conditional, 1 = unconditional) reused
        a cached result, in a one-segment run."""
        per_step = 2 if cfg else 1
        calls = self.log[branch::per_step]
        return [i for i, ran in enumerate(calls) if not ran]


def measure(engine, settings, counter, mode: str, length_s: int, image) -> dict:
    from wan_demo.core.request import GenerationRequest
    from wan_demo.core.validate import validate
    from wan_demo.generate import generate

    counter.reset()
    request = validate(
        GenerationRequest(image, "a cat walking", video_length_s=length_s, seed=1, speed_mode=mode)
    )
    start = time.perf_counter()
    result = generate(request, engine, settings)
    cfg = result.settings["guidance"] > 1.0
    return dict(seconds=time.perf_counter() - start, calls=counter.calls, computed=counter.computed,
                frames=result.num_frames, segments=result.settings["segments"],
                skipped=[counter.skipped_steps(cfg, b) for b in range(2 if cfg else 1)])  # fmt: skip


def main() -> None:
    import numpy as np
    from PIL import Image

    from wan_demo.core.settings import Settings
    from wan_demo.model.engine import load_engine

    tmp = Path(tempfile.mkdtemp(prefix="wan-forwards-"))
    lora = write_tiny_lora(tmp)
    base = Settings(model="tiny", device="cpu", tiny_max_area=AREA, lora=str(lora), output_dir=tmp / "out")
    engine = load_engine(base)
    counter = ForwardCounter(engine.pipe.transformer)
    image = Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8))
    variants = [
        ("quality", "quality", base.replace(cache="off")),
        ("quality+fbcache", "quality", base.replace(cache="fbcache")),
        ("quality+magcache", "quality", base.replace(cache="magcache")),
        ("fast", "fast", base),
    ]
    measure(engine, base, counter, "fast", 5, image)  # warm caches/allocator before timing
    print(f"tiny model, {AREA} px output, measured on CPU; FirstBlockCache threshold {base.cache_threshold}; "
          f"MagCache threshold {base.magcache_threshold}, K {base.magcache_max_skip}, "
          f"retention {base.magcache_retention} (published Wan2.1 I2V 480P ratios)\n")  # fmt: skip
    print("| clip | mode | segments | forward calls | computed | per segment | x fewer forwards | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    skips = {}
    for length in (5, 10):
        rows = [(label, measure(engine, s, counter, mode, length, image)) for label, mode, s in variants]
        q = rows[0][1]
        for label, r in rows:
            skips.setdefault(label, r["skipped"])
            print(
                f"| {length:>2} s | {label:<16} | {r['segments']:>8} | {r['calls']:>13} |"
                f" {r['computed']:>8} |"
                f" {r['computed'] / r['segments']:>11.1f} | {q['computed'] / r['computed']:>5.2f}x |"
                f" {r['seconds']:>6.2f} |"
            )
    print("\nSkipped steps of the 5 s clip (0-based step indices; conditional / unconditional call):\n")
    print("| mode | skipped (cond) | skipped (uncond) |")
    print("|---|---|---|")
    for label, branches in skips.items():
        cond, uncond = (branches + [[]])[:2] if len(branches) > 1 else (branches[0], None)
        other = "no CFG" if uncond is None else f"{len(uncond)}: {uncond}"
        print(f"| {label} | {len(cond)}: {cond} | {other} |")
    print("\nFirstBlockCache decides from each run's own first-block output (its skips depend on the")
    print("weights and input: the tiny model's are not the real model's); MagCache's skips depend only on")
    print("the calibrated ratios and the step count: the same on the 14B model.")


if __name__ == "__main__":
    main()
