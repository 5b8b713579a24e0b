"""Measure the activation peaks the memory planner uses, on the CPU, with the REAL architecture:
python -m bench.activations [--tokens 1560,3120,6240] [--vae-frames 2] [--vae-growth]

Transformer: a real-width Wan I2V transformer (dim 5120, 40 heads, ffn 13824, image cross-attention,
config from model/memory/estimate.TRANSFORMER_CONFIG) with ONE block, random bf16 weights, no grad, SDPA;
512 text + 257 image tokens. Blocks run one after another, so one block's peak is the transformer's
at any depth. VAE: the real AutoencoderKLWan config (fp32) decoding 480x832 latents, tiled and not.

Method: one process per case (clean allocator), MALLOC_MMAP_THRESHOLD_=65536 so large frees go back
to the OS, a thread samples RSS from /proc/self/statm every 2 ms, one warm-up run, then
peak - RSS before the measured run. A measured CPU proxy: GPU kernels (flash attention, fused
norms) differ. The fitted line gives the planner's per-token constant (model/memory/estimate.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Highest RSS seen by a 2 ms sampling thread while the block runs (`measure`: another
    reading, e.g. anonymous memory only)."""

    def __init__(self, measure=None, every_s: float = 0.002):
        self.measure, self.every_s = measure or rss, every_s

    def __enter__(self):
        self.start = self.peak = self.measure()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.measure())
            time.sleep(self.every_s)

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.measure())

    @property
    def above_start(self) -> int:
        return self.peak - self.start


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def transformer_case(latent_frames: int) -> dict:
    import torch
    from diffusers import WanTransformer3DModel

    from wan_demo.model.memory.estimate import TRANSFORMER_CONFIG

    torch.manual_seed(0)
    model = WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "num_layers": 1}).to(torch.bfloat16).eval()
    h, w = 480 // 8, 832 // 8

    def run(frames: int) -> None:
        x = torch.randn(1, 36, frames, h, w, dtype=torch.bfloat16)
        text = torch.randn(1, 512, 4096, dtype=torch.bfloat16)
        image = torch.randn(1, 257, 1280, dtype=torch.bfloat16)
        with torch.no_grad():
            model(x, torch.tensor([500]), text, image, return_dict=False)

    run(1)  # warm-up at the smallest size: kernels, allocator pools
    with PeakRss() as peak:
        start = time.perf_counter()
        run(latent_frames)
    tokens = latent_frames * h * w // 4
    return dict(kind="transformer", tokens=tokens, peak_mib=peak.above_start / MIB,
                seconds=time.perf_counter() - start)  # fmt: skip


def vae_case(latent_frames: int, kind: str, base_dim: int = 96) -> dict:
    """`kind`: vae | vae_tiled (decode `latent_frames` latents) or vae_encode | vae_encode_tiled (encode
    the (latent_frames - 1) * 4 + 1 frame conditioning video the I2V pipeline builds). `base_dim` < 96:
    a narrow VAE (same layers, same output) whose compute is (base_dim / 96)^2 of the real one."""
    import torch
    from diffusers import AutoencoderKLWan

    from wan_demo.model.memory.estimate import VAE_CONFIG

    vae = AutoencoderKLWan(**{**VAE_CONFIG, "base_dim": base_dim}).eval()
    if kind.endswith("tiled"):
        vae.enable_tiling()
    frames = (latent_frames - 1) * 4 + 1
    z = torch.randn(1, 16, latent_frames, 480 // 8, 832 // 8)
    run = (lambda x: vae.decode(x)) if "encode" not in kind else (lambda x: vae.encode(x))
    data = z if "encode" not in kind else torch.randn(1, 3, frames, 480, 832)
    with torch.no_grad():
        run(data[:, :, :1])  # warm-up
        with PeakRss() as peak:
            start = time.perf_counter()
            run(data)
    return dict(kind=kind, latent_frames=latent_frames, frames=frames, base_dim=base_dim,
                peak_mib=peak.above_start / MIB, seconds=time.perf_counter() - start)  # fmt: skip


def dequant_case(kind: str) -> dict:
    """Peak memory of diffusers dequantizing the largest linear (ffn 13824 x 5120) from `kind`, over
    the bf16 weight it produces: the transient every GGUF layer costs per forward (on the device)."""
    import numpy as np
    import torch
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor
    from gguf import GGMLQuantizationType

    from bench.gguf_files import random_blocks

    qtype = GGMLQuantizationType[kind]
    n_blocks = 13824 * 5120 // (256 if kind.endswith("_K") else 32)
    blocks = random_blocks(kind, n_blocks, np.random.default_rng(0))
    param = GGUFParameter(torch.from_numpy(blocks.reshape(13824, -1)), quant_type=qtype)
    dequantize_gguf_tensor(param).to(torch.bfloat16)  # warm-up
    with PeakRss() as peak:
        out = dequantize_gguf_tensor(param).to(torch.bfloat16)
    bf16 = out.numel() * 2
    return dict(kind=kind, peak_mib=peak.above_start / MIB, copies=peak.above_start / bf16)


def measure(args: list[str]) -> dict:
    """Run one case in a fresh process (the allocator keeps no memory from another case)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-m", "bench.activations", "--child", *args],
                         env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares line y = slope * x + intercept."""
    n = len(points)
    mx, my = sum(p[0] for p in points) / n, sum(p[1] for p in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return slope, my - slope * mx


def vae_growth(dims=(24, 12), frames=(2, 21)) -> None:
    """The VAE's peak at 81 frames: the real-width peak of one 4-frame chunk (measured at 2 latent
    frames, MEASURED_VAE_MIB) plus what grows with the frame count (the decoded video, its tiles and
    their concatenation: 3 channels, independent of the VAE's width), measured at 5 and 81 frames with
    narrow VAEs (two widths show the growth does not depend on it). A full-width 81-frame decode takes
    hours on this CPU."""
    from wan_demo.model.memory.estimate import MEASURED_VAE_MIB

    print("| case | base_dim | peak MiB at 5 frames | at 81 frames | growth MiB | seconds (81) |")
    print("|---|---|---|---|---|---|")
    growth: dict[str, list[float]] = {}
    for kind in ("vae", "vae_tiled", "vae_encode", "vae_encode_tiled"):
        for dim in dims:
            small, full = (measure([kind, str(f), str(dim)]) for f in frames)
            growth.setdefault(kind, []).append(full["peak_mib"] - small["peak_mib"])
            print(f"| {kind} | {dim} | {small['peak_mib']:.0f} | {full['peak_mib']:.0f} "
                  f"| {growth[kind][-1]:.0f} | {full['seconds']:.0f} |")  # fmt: skip
    print(
        "\n| decode 480x832, 81 frames | real-width chunk peak MiB (measured) | + growth MiB | = peak MiB |"
    )
    print("|---|---|---|---|")
    for kind, name in (("vae", "untiled"), ("vae_tiled", "tiled")):
        more = max(growth[kind])
        print(f"| {name} | {MEASURED_VAE_MIB[name]} | {more:.0f} | {MEASURED_VAE_MIB[name] + more:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs="*")
    parser.add_argument(
        "--latent-frames", default="1,2,4", help="transformer sizes (1 latent frame = 1560 tokens)"
    )
    parser.add_argument(
        "--vae-frames", type=int, default=2, help="latent frames decoded (4 video frames each)"
    )
    parser.add_argument("--vae-growth", action="store_true", help="the VAE at 81 frames (narrow VAE)")
    a = parser.parse_args()
    if a.child is not None:
        kind = a.child[0]
        n = int(a.child[1]) if kind != "dequant" else 0
        if kind == "dequant":
            print(json.dumps(dequant_case(a.child[1])))
            return
        dim = int(a.child[2]) if len(a.child) > 2 else 96
        print(json.dumps(transformer_case(n) if kind == "transformer" else vae_case(n, kind, dim)))
        return
    if a.vae_growth:
        vae_growth()
        return
    from wan_demo.model.memory.estimate import ACT_BYTES_PER_TOKEN, ACT_FIXED_GB, Shape, vae_activations_gb

    rows = [measure(["transformer", f]) for f in a.latent_frames.split(",")]
    slope, intercept = fit([(r["tokens"], r["peak_mib"] * MIB) for r in rows])
    print("Transformer, one real-width block (dim 5120, ffn 13824), bf16, CPU:\n")
    print("| tokens | measured on CPU MiB | planner estimate MiB | estimate / measured | forward s |")
    print("|---|---|---|---|---|")
    for r in rows:
        est = (r["tokens"] * ACT_BYTES_PER_TOKEN + ACT_FIXED_GB * 1e9) / MIB
        ratio = est / r["peak_mib"]
        print(f"| {r['tokens']} | {r['peak_mib']:.0f} | {est:.0f} | {ratio:.2f} | {r['seconds']:.1f} |")
    print(f"\nfit: {slope / 1024:.1f} KiB per token + {intercept / MIB:.0f} MiB "
          f"(= {slope / (2 * 5120):.2f} bf16 copies of a tokens x 5120 tensor)")  # fmt: skip
    full = (slope * Shape().tokens + intercept) / 1e9
    print(f"at 81x480x832 ({Shape().tokens} tokens): fitted {full:.2f} GB\n")
    print("| VAE decode 480x832 | latent frames | measured on CPU MiB | planner estimate MiB | seconds |")
    print("|---|---|---|---|---|")
    for kind in ("vae", "vae_tiled"):
        r = measure([kind, str(a.vae_frames)])
        est = vae_activations_gb(Shape(), 96, kind == "vae_tiled") * 1e9 / MIB
        print(f"| {kind} | {a.vae_frames} | {r['peak_mib']:.0f} | {est:.0f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
