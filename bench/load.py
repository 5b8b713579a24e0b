"""Loader cost on a reduced-depth, REAL-width Wan I2V transformer: python -m bench.load [--blocks 2]

Writes the transformer (real dims from model/memory/estimate.TRANSFORMER_CONFIG, `--blocks` of 40 blocks,
random weights) as a bf16 .safetensors and as GGUF Q8_0 / Q4_0 in the published key layout
(bench/wan_files.py), then loads each through the app's own loader (model.load.load_transformer_file),
one fresh process per file:

- peak RSS while loading / RSS once every weight page was touched ("final resident"), above the
  process's RSS before loading (2 ms RSS sampler, bench/activations.PeakRss);
- load throughput: file bytes / (load + touching every weight once), beside a plain sequential
  read of the same file in the same process (page cache warm for both: the files were just written);
- one forward of the reduced-depth transformer at 1560 tokens (1 latent frame of 480x832) with the
  Q8_0 and Q4_0 weights beside bf16, as a ratio (GGUF dequantizes every linear's weight per forward).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.activations import PeakRss, rss

GB = 1e9


def write_files(folder: Path, blocks: int) -> dict[str, Path]:
    import torch
    from diffusers import WanTransformer3DModel

    from bench.wan_files import write_transformer_files
    from wan_demo.model.memory.estimate import TRANSFORMER_CONFIG

    torch.manual_seed(0)
    model = WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "num_layers": blocks}).to(torch.bfloat16).eval()
    model.save_config(folder / "model" / "transformer")  # the "repo" the loader reads the config from
    files = write_transformer_files(model, folder / "files")
    del model
    return files


def touch(module) -> int:
    """Read every weight byte once (sums them); returns the bytes touched."""
    import torch

    total = 0
    with torch.no_grad():
        for p in module.parameters():
            data = p.as_tensor() if hasattr(p, "as_tensor") else p
            data.view(-1)[:: max(1, 4096 // data.element_size())].float().sum()  # one read per page
            total += data.numel() * data.element_size()
    return total


def forward_s(model) -> float:
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 36, 1, 60, 104, generator=g).bfloat16()
    text = torch.randn(1, 512, 4096, generator=g).bfloat16()
    image = torch.randn(1, 257, 1280, generator=g).bfloat16()
    with torch.no_grad():
        model(x, torch.tensor([500]), text, image, return_dict=False)  # warm-up
        start = time.perf_counter()
        model(x, torch.tensor([500]), text, image, return_dict=False)
    return time.perf_counter() - start


def child(path: str, model_folder: str, with_forward: bool) -> dict:
    import diffusers.quantizers.gguf.utils  # noqa: F401  # imports are not loading: pay them first
    from diffusers import GGUFQuantizationConfig, WanTransformer3DModel  # noqa: F401
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers  # noqa: F401

    from wan_demo.core.settings import Settings
    from wan_demo.model.load import load_transformer_file

    size = os.path.getsize(path)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:  # plain sequential read, 64 MiB at a time
        buf = bytearray(64 * 2**20)
        while f.readinto(buf):
            pass
    read_s = time.perf_counter() - start
    del buf
    base = rss()
    with PeakRss() as peak:
        start = time.perf_counter()
        model = load_transformer_file(path, model_folder, Settings(offline=True))
        touched = touch(model)
        load_s = time.perf_counter() - start
    final = rss()
    return dict(file_gb=size / GB, weights_gb=touched / GB, peak_gb=(peak.peak - base) / GB,
                final_gb=(final - base) / GB, load_gbps=size / GB / load_s, read_gbps=size / GB / read_s,
                forward_s=forward_s(model) if with_forward else None)  # fmt: skip


def measure(path: Path, model_folder: Path, with_forward: bool) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    args = [
        sys.executable,
        "-m",
        "bench.load",
        "--child",
        str(path),
        str(model_folder),
        str(int(with_forward)),
    ]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3)
    parser.add_argument("--blocks", type=int, default=2, help="transformer blocks of the real 40")
    parser.add_argument("--no-forward", action="store_true", help="skip the forward timing")
    a = parser.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], a.child[2] == "1")))
        return
    folder = Path(tempfile.mkdtemp(prefix="wan-load-"))
    files = write_files(folder, a.blocks)
    rows = {kind: measure(path, folder / "model", not a.no_forward) for kind, path in files.items()}
    print(f"Reduced-depth real-width Wan I2V transformer ({a.blocks} of 40 blocks), measured on CPU\n")
    print("| file | file GB | peak RSS loading GB | final RSS GB | peak - final GB | load GB/s | "
          "plain read GB/s | load / read | forward s | x bf16 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    bf16 = rows["bf16"]["forward_s"]
    for kind, r in rows.items():
        fwd = f"{r['forward_s']:.2f} | {r['forward_s'] / bf16:.2f}" if bf16 else "- | -"
        print(f"| {kind} | {r['file_gb']:.2f} | {r['peak_gb']:.2f} | {r['final_gb']:.2f} | "
              f"{r['peak_gb'] - r['final_gb']:.2f} | {r['load_gbps']:.2f} | {r['read_gbps']:.2f} | "
              f"{r['load_gbps'] / r['read_gbps']:.0%} | {fwd} |")  # fmt: skip
    print("\nload = load_transformer_file + one read of every weight page; forward = 1560 tokens (1 latent")
    print("frame of 480x832), the full reduced-depth transformer, bf16 compute.")


if __name__ == "__main__":
    main()
