"""Count transformer forwards and wall time per speed mode on the tiny model:
python -m bench.forwards

Runs the real path (wan_demo.generate.generate) on one engine: quality (40 steps + CFG),
quality + FirstBlockCache (default threshold) and fast (4 steps, CFG off, with a LoRA made here
with peft on the tiny transformer, standing in for the lightx2v LoRA). "calls" counts
transformer forward calls; "computed" counts those that ran the last block (the cache skips it).
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
    def __init__(self, transformer):
        self.calls = self.computed = 0
        transformer.register_forward_hook(lambda *_: self._add("calls"))
        transformer.blocks[-1].ffn.register_forward_hook(lambda *_: self._add("computed"))

    def _add(self, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)


REPEATS = 3  # wall time = the fastest of 3 runs (the CPU is shared; forward counts never vary)


def measure(engine, settings, counter, mode: str, length_s: int, image) -> dict:
    from wan_demo.core.request import GenerationRequest
    from wan_demo.core.validate import validate
    from wan_demo.generate import generate

    counter.calls = counter.computed = 0
    request = validate(
        GenerationRequest(image, "a cat walking", video_length_s=length_s, seed=1, speed_mode=mode)
    )
    start = time.perf_counter()
    result = generate(request, engine, settings)
    return dict(seconds=time.perf_counter() - start, calls=counter.calls, computed=counter.computed,
                frames=result.num_frames, segments=result.settings["segments"])  # fmt: skip


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
        ("quality+cache", "quality", base.replace(cache="fbcache")),
        ("fast", "fast", base),
    ]
    measure(engine, base, counter, "fast", 5, image)  # warm caches/allocator before timing
    print(f"tiny model, {AREA} px output, FirstBlockCache threshold {base.cache_threshold}\n")
    print("| clip | mode          | segments | forward calls | computed | per segment | wall s | x quality |")
    print("|------|---------------|----------|---------------|----------|-------------|--------|-----------|")
    for length in (5, 10):
        rows = [(label, measure(engine, s, counter, mode, length, image)) for label, mode, s in variants]
        q = rows[0][1]
        for label, r in rows:
            print(
                f"| {length:>2} s | {label:<13} | {r['segments']:>8} | {r['calls']:>13} |"
                f" {r['computed']:>8} |"
                f" {r['computed'] / r['segments']:>11.1f} | {r['seconds']:>6.2f} |"
                f" {q['seconds'] / r['seconds']:>8.1f}x |"
            )


if __name__ == "__main__":
    main()
