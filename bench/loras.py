"""Community LoRAs at real width, measured on CPU in one run: python -m bench.loras [--blocks 1]

A reduced-depth Wan I2V transformer at the REAL widths (dim 5120, ffn 13824, 40 heads, image
cross-attention; `--blocks` of its 40 blocks, random weights) goes through the app's own LoRA code
(model/loras.py LoraState: library -> checks -> warm adapters -> set_adapters; model/lora_merge.py):

1. per-step cost of 0, 1, 2, 4 active LoRAs (rank `--rank`, four files in four layouts), unfused and
   merged, on bf16 weights and on GGUF Q8_0 weights (written from the same model, loaded by the app's
   GGUF loader), side by side: the time inside the transformer blocks for one forward at `--tokens`
   tokens (median of `--repeats`), and its ratio to no LoRA on the same weights. A step of the real
   model is 40 such blocks (plus the embeddings and head, the same with or without LoRAs);
2. the switch cost between two warm LoRA sets (set_adapters; files loaded: none) and the cost of a
   merge / switch-back of the 4-LoRA set;
3. how far the merged output is from the unfused one, beside how far storing the weights as Q8_0
   moves the output (the "GGUF rounding"), relative to the output's mean magnitude.

Each phase runs in a fresh process (write the files; bf16; GGUF), the weights loaded by the app's
loader (model/load.py) from files in the published layout (bench/wan_files.py, bench/lora_files.py);
peak RSS stays under ~3 GB at 1 block.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.lora_files import write_diffusers, write_lightx2v, write_musubi, write_wan
from wan_demo.core.request import LoraChoice
from wan_demo.core.settings import Settings
from wan_demo.model.memory.estimate import TRANSFORMER_CONFIG

SETS = {0: (), 1: ("a",), 2: ("a", "b"), 4: ("a", "b", "c", "d")}


def build(blocks: int, folder: Path):
    """The real-width transformer in bf16, built on the meta device and filled in place (no fp32 copy)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "num_layers": blocks})
    finally:
        torch.set_default_dtype(default)
    model = model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if "norm" in name and p.dim() == 1 else p.normal_(0, 0.02)
    model.save_config(folder / "model" / "transformer")
    return model


def write_library(model, folder: Path, rank: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_lightx2v(model, folder / "a.safetensors", rank, seed=1, record=False)
    write_musubi(model, folder / "b.safetensors", rank, alpha=rank / 4, seed=2, record=False)
    write_diffusers(model, folder / "c.safetensors", rank, seed=3, record=False)
    write_wan(model, folder / "d.safetensors", rank, alpha=rank / 2, seed=4, record=False)


class BlockClock:
    """Seconds spent inside the transformer blocks (hooks around each block)."""

    def __init__(self, transformer):
        self.seconds, self._start = 0.0, 0.0
        for block in transformer.blocks:
            block.register_forward_pre_hook(lambda *_: setattr(self, "_start", time.perf_counter()))
            block.register_forward_hook(
                lambda *_: setattr(self, "seconds", self.seconds + time.perf_counter() - self._start)
            )


def inputs(tokens: int):
    g = torch.Generator().manual_seed(0)
    width = tokens * 4 // 30  # latent 30 x width, one latent frame: tokens = 30 * width / 4
    latents = torch.randn(1, 36, 1, 30, width, generator=g).bfloat16()
    text, image = torch.randn(1, 512, 4096, generator=g), torch.randn(1, 257, 1280, generator=g)
    return latents, torch.tensor([500]), text.bfloat16(), image.bfloat16()


def step(pipe, clock: BlockClock, args) -> tuple[float, torch.Tensor]:
    clock.seconds = 0.0
    with torch.no_grad():
        out = pipe.transformer(*args, return_dict=False)[0].float()
    return clock.seconds, out


def measure(pipe, state, tokens: int, repeats: int, weights: str) -> tuple[list[dict], dict]:
    clock, args, rows, outputs = BlockClock(pipe.transformer), inputs(tokens), [], {}
    choices = {n: tuple(LoraChoice(f"{x}.safetensors", 0.8) for x in names) for n, names in SETS.items()}
    for applied in ("unfused", "merged"):
        state.merger.after = 1 if applied == "merged" else 0  # merge-on-load at once, or never
        for n, chosen in choices.items():
            if applied == "merged" and not n:
                continue
            started = time.perf_counter()
            state.apply(pipe, chosen, fast=False)  # loads (first time), switches, merges
            setup_s = time.perf_counter() - started
            step(pipe, clock, args)  # warm-up
            times = [step(pipe, clock, args)[0] for _ in range(repeats)]
            outputs[(applied, n)] = step(pipe, clock, args)[1]
            label = applied if n else "-"
            rows.append(
                dict(
                    weights=weights, loras=n, applied=label, step_s=statistics.median(times), setup_s=setup_s
                )
            )
    state.apply(pipe, (), fast=False)  # unmerges
    switch = switch_cost(pipe, state, choices)
    return rows, dict(outputs=outputs, switch_s=switch, loads=state.adapters.loads)


def switch_cost(pipe, state, choices) -> float:
    """Median seconds of one switch between two warm 2-LoRA sets (unfused: adapter flags only)."""
    state.merger.after = 0
    a, b = choices[2], (LoraChoice("c.safetensors", 0.5), LoraChoice("d.safetensors", 1.2))
    times = []
    for chosen in (a, b) * 5:
        started = time.perf_counter()
        state.apply(pipe, chosen, fast=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times[2:])


def pipeline(transformer):
    from diffusers import WanImageToVideoPipeline

    from wan_demo.model.tiny import build_tiny_components

    return WanImageToVideoPipeline(**{**build_tiny_components(), "transformer": transformer})


def state_for(settings: Settings, transformer):
    from wan_demo.model.loras import LoraState

    return LoraState(settings, dict(transformer.config))


def report(folder: Path, a) -> None:
    bf16, gguf = (torch.load(folder / f"{p}.pt") for p in ("bf16", "gguf"))
    print(f"Community LoRAs on a real-width Wan I2V transformer ({a.blocks} of 40 blocks), rank {a.rank}, "
          f"{a.tokens} tokens per forward; measured on CPU in one run\n")  # fmt: skip
    table(bf16["rows"] + gguf["rows"], a.blocks)
    loads = f"files loaded in all: bf16 {bf16['loads']}, GGUF {gguf['loads']}"
    print(f"\nswitch between two warm 2-LoRA sets (set_adapters; {loads}): "
          f"bf16 {bf16['switch_s'] * 1e3:.1f} ms, GGUF {gguf['switch_s'] * 1e3:.1f} ms")  # fmt: skip
    out = {"bf16": bf16["outputs"], "gguf": gguf["outputs"]}
    scale = out["gguf"][("unfused", 4)].abs().mean()
    rounding = (out["gguf"][("merged", 4)] - out["gguf"][("unfused", 4)]).abs().mean() / scale
    quantized_by = (out["gguf"][("unfused", 0)] - out["bf16"][("unfused", 0)]).abs().mean() / scale
    merged_bf16 = (out["bf16"][("merged", 4)] - out["bf16"][("unfused", 4)]).abs().mean() / scale
    print(f"4 LoRAs merged vs unfused, mean |diff| / mean |output|: GGUF Q8_0 {rounding:.4f} (storing the "
          f"weights as Q8_0 moves it {quantized_by:.4f}), bf16 {merged_bf16:.4f}")  # fmt: skip


def table(rows: list[dict], blocks: int) -> None:
    print(f"| weights | LoRAs | applied | block time per step s ({blocks} of 40 blocks) | x no LoRA | "
          "set up s (load / merge) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    base = {r["weights"]: r["step_s"] for r in rows if r["loras"] == 0}
    for r in rows:
        print(f"| {r['weights']} | {r['loras']} | {r['applied']} | {r['step_s']:.2f} | "
              f"{r['step_s'] / base[r['weights']]:.3f} | {r['setup_s']:.1f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=1, help="transformer blocks of the real 40")
    parser.add_argument("--tokens", type=int, default=390, help="tokens per forward (1560 = 1 latent frame)")
    parser.add_argument("--rank", type=int, default=32, help="rank of each LoRA")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # (phase, folder): one fresh process each
    a = parser.parse_args()
    if a.child:
        return child(a.child[0], Path(a.child[1]), a)
    folder = Path(tempfile.mkdtemp(prefix="wan-loras-"))
    extra = [
        "--blocks",
        str(a.blocks),
        "--tokens",
        str(a.tokens),
        "--rank",
        str(a.rank),
        "--repeats",
        str(a.repeats),
    ]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # large frees go back to the OS between phases
    try:
        for phase in ("write", "bf16", "gguf"):
            command = [sys.executable, "-m", "bench.loras", "--child", phase, str(folder), *extra]
            subprocess.run(command, env=env, check=True)
        report(folder, a)
    finally:  # ~2.6 GB of weights per block
        shutil.rmtree(folder, ignore_errors=True)


def child(phase: str, folder: Path, a) -> None:
    """One phase in its own process: write the files, or measure one kind of weights."""
    settings = Settings(lora_dir=folder / "loras", data_dir=folder / "data", lora_warm_gb=8.0, offline=True)
    if phase == "write":
        from bench import gguf_files
        from bench.wan_files import original_state_dict, write_safetensors

        model = build(a.blocks, folder)
        write_safetensors(model, folder / "transformer-bf16.safetensors")
        state = original_state_dict(model)  # GGUF in city96's layout, one float32 tensor at a time
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        gguf_files.write(folder / "transformer-Q8_0.gguf", shapes, "Q8_0", weights=AsFloat(state))
        write_library(model, folder / "loras", a.rank)
        return
    from wan_demo.model.load import load_transformer_file

    name = "transformer-bf16.safetensors" if phase == "bf16" else "transformer-Q8_0.gguf"
    transformer = load_transformer_file(str(folder / name), str(folder / "model"), settings)
    pipe = pipeline(transformer)
    rows, found = measure(pipe, state_for(settings, transformer), a.tokens, a.repeats, WEIGHTS[phase])
    torch.save({"rows": rows, **found}, folder / f"{phase}.pt")


WEIGHTS = {"bf16": "bf16", "gguf": "GGUF Q8_0"}


class AsFloat:
    """The state dict as float32 arrays, one at a time (gguf_files.write reads `.get(name)`)."""

    def __init__(self, state: dict):
        self.state = state

    def get(self, name: str):
        return self.state[name].float().numpy()


if __name__ == "__main__":
    main()
