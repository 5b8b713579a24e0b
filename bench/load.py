"""Transformer loading throughput beside a plain read of the same file: python -m bench.load

Full size (default): for each GGUF format (`--formats`, default Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0
Q3_K_M), writes a 40-block file in city96's byte layout (bench/gguf_files.py: 8-18 GB, random codes
under finite scales), measures it, deletes it (one file on disk at a time, in `--folder`, default
a temporary folder). Each measurement is one fresh process that pays its imports first, then times
side by side:

- plain read: the file read sequentially into a 64 MiB buffer;
- load: the app's loader (model.load.load_transformer_file) plus one read of every weight page,
  i.e. until every weight is in memory (the GGUF linears keep the file's pages).

Cold = the file's pages evicted before each of the two (`posix_fadvise(POSIX_FADV_DONTNEED)` on the
file: no privileges needed, only this file's clean pages go; `/proc/sys/vm/drop_caches` would drop
every process's cache on a shared machine). Warm = the file read once before both. Ratio = load
GB/s / read GB/s (goal >= 0.70). `--repeats` runs per mode; the table shows each run's ratio and
the median. Also the anonymous (non-file) memory the load added at its peak.

`--profile FILE REPO`: where a warm load of one file spends its time (cProfile, per phase).

`--blocks N` (N < 40): the reduced-depth real-width files of bench/wan_files.py instead (bf16
safetensors, Q8_0, Q4_0), warm, with one forward each: quick, but dominated by fixed per-load work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.activations import PAGE, PeakRss

GB = 1e9
FORMATS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M")
READ_CHUNK = 64 * 2**20  # bytes per read() of the plain read


def evict(path: str) -> None:
    """Drop this file's clean pages from the page cache (the next read comes from disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages (a file just written) cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def plain_read(path: str) -> float:
    """Seconds to read the whole file sequentially."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(READ_CHUNK)
        while f.readinto(buf):
            pass
    return time.perf_counter() - start


def touch(module) -> int:
    """Read every weight byte once (one read per page); returns the bytes touched."""
    import torch

    total = 0
    with torch.no_grad():
        for p in module.parameters():
            data = p.as_tensor() if hasattr(p, "as_tensor") else p
            data.view(-1)[:: max(1, 4096 // data.element_size())].float().sum()
            total += data.numel() * data.element_size()
    return total


def available() -> int:
    """MemAvailable (bytes): what the page cache can hold of the file without evicting others'."""
    from wan_demo.model.gguf import _available_bytes

    return _available_bytes()


def anon() -> int:
    """Resident memory that is not file pages (statm: resident - shared), bytes."""
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * PAGE


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


# where a load's time goes: (label, file suffix, function) as cProfile names them
PHASES = (
    ("GGUF header + tensor views (GGUFReader)", "gguf/gguf_reader.py", "__init__"),
    ("layout check (a 2nd meta build)", "model/load.py", "_check_layout"),
    ("module tree built (from_config)", "diffusers/configuration_utils.py", "from_config"),
    ("linears swapped for GGUF linears", "gguf/gguf_quantizer.py", "_process_model_before_weight_loading"),
    ("tensors placed (load_model_dict_into_meta)", "diffusers/models/model_loading_utils.py",
     "load_model_dict_into_meta"),
    ("state_dict() walks", "torch/nn/modules/module.py", "state_dict"),
    ("reading every weight page (touch)", "bench/load.py", "touch"),
)  # fmt: skip


def profile(path: str, model_folder: str) -> str:
    """cProfile of one warm load + touch: seconds per phase (cumulative, profiler overhead included)."""
    import cProfile
    import pstats

    from wan_demo.core.settings import Settings
    from wan_demo.model.load import load_transformer_file

    _imports()
    plain_read(path)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    touch(load_transformer_file(path, model_folder, Settings(offline=True)))
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, ..., tottime, cumtime, ...)
    lines = [f"| whole load + touch | {total:.2f} |"]
    for label, suffix, name in PHASES:
        cum = max((v[3] for (f, _, n), v in stats.items() if f.endswith(suffix) and n == name), default=0.0)
        lines.append(f"| {label} | {cum:.2f} |")
    return "\n".join(lines)


def _imports() -> None:
    """Imports are not loading: a measurement pays them first."""
    import diffusers.quantizers.gguf.utils  # noqa: F401
    import gguf  # noqa: F401
    from diffusers import GGUFQuantizationConfig, WanTransformer3DModel  # noqa: F401
    from diffusers.loaders.single_file_model import load_model_dict_into_meta  # noqa: F401
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers  # noqa: F401
    from diffusers.models.modeling_utils import no_init_weights  # noqa: F401


def child(path: str, model_folder: str, cold: bool, with_forward: bool) -> dict:
    _imports()
    from wan_demo.core.settings import Settings
    from wan_demo.model.load import load_transformer_file

    size = os.path.getsize(path)
    evict(path) if cold else plain_read(path)
    read_s = plain_read(path)
    if cold:
        evict(path)
    base, avail, machine = anon(), available(), os.getloadavg()[0]
    with PeakRss(anon, every_s=0.01) as peak:  # anonymous memory only: the file's pages are page cache
        start, cpu = time.perf_counter(), time.process_time()  # process CPU: every thread's
        model = load_transformer_file(path, model_folder, Settings(offline=True))
        touched = touch(model)
        load_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    return dict(file_gb=size / GB, weights_gb=touched / GB, anon_peak_gb=(peak.peak - base) / GB,
                load_gbps=size / GB / load_s, read_gbps=size / GB / read_s, load_s=load_s, read_s=read_s,
                cpu_s=cpu_s, avail_gb=avail / GB, loadavg=machine,
                forward_s=forward_s(model) if with_forward else None)  # fmt: skip


def measure(path: Path, model_folder: Path, cold: bool, with_forward: bool = False) -> dict:
    args = [sys.executable, "-m", "bench.load", "--child", str(path), str(model_folder)]
    args += ["--cold"] * cold + ["--forward"] * with_forward
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:  # the child's own error, not only its exit status
        raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def model_folder(folder: Path, blocks: int = 40) -> Path:
    """A diffusers "repo" holding only the transformer config (the loader reads it from there)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    from wan_demo.model.memory.estimate import TRANSFORMER_CONFIG

    with init_empty_weights():
        WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "num_layers": blocks}).save_config(
            folder / "model" / "transformer"
        )
    return folder / "model"


def full_size(folder: Path, formats: list[str], repeats: int) -> None:
    from bench.gguf_files import real_shapes, write

    config, shapes = model_folder(folder), real_shapes()
    print("Wan2.1 I2V 14B transformer, all 40 blocks, GGUF in city96's layout; measured on CPU")
    print(f"(2 cores, shared); {repeats} fresh process(es) per mode, ratio = load GB/s / plain read GB/s;")
    print("RAM avail = MemAvailable before the load (least of the runs; a file larger than it cannot stay")
    print("cached: 'warm' is then partly cold); load CPU s = the load's process CPU time (median);")
    print("machine load = 1-min load average of the 2-core machine during the runs (median)\n")
    print("| file | GB | RAM avail GB | cold read GB/s | cold load GB/s | cold ratio (runs) | warm read GB/s "
          "| warm load GB/s | warm ratio (runs) | load CPU s | machine load | anon peak GB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for ftype in formats:
        path = write(folder / f"wan2.1-i2v-14b-480p-{ftype}.gguf", shapes, ftype)
        try:
            runs = {
                mode: [measure(path, config, mode == "cold") for _ in range(repeats)]
                for mode in ("cold", "warm")
            }
        finally:
            path.unlink()
        every = runs["cold"] + runs["warm"]
        cells = [f"{ftype}", f"{every[0]['file_gb']:.2f}", f"{min(x['avail_gb'] for x in every):.1f}"]
        for mode in ("cold", "warm"):
            r = runs[mode]
            ratios = [x["load_gbps"] / x["read_gbps"] for x in r]
            each = ", ".join(f"{q:.2f}" for q in ratios)
            cells += [f"{statistics.median(x['read_gbps'] for x in r):.2f}",
                      f"{statistics.median(x['load_gbps'] for x in r):.2f}",
                      f"**{statistics.median(ratios):.2f}** ({each})"]  # fmt: skip
        cells += [f"{statistics.median(x['cpu_s'] for x in every):.1f}",
                  f"{statistics.median(x['loadavg'] for x in every):.1f}",
                  f"{max(x['anon_peak_gb'] for x in every):.2f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |", flush=True)


def write_files(folder: Path, blocks: int) -> dict[str, Path]:
    """Reduced-depth real-width files with the same random weights: bf16 safetensors, Q8_0, Q4_0
    (bench/wan_files.py), and their config as the "repo" folder/model."""
    import torch
    from diffusers import WanTransformer3DModel

    from bench.wan_files import write_transformer_files
    from wan_demo.model.memory.estimate import TRANSFORMER_CONFIG

    torch.manual_seed(0)
    model = WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "num_layers": blocks}).to(torch.bfloat16).eval()
    model.save_config(folder / "model" / "transformer")
    return write_transformer_files(model, folder / "files")


def reduced(folder: Path, blocks: int) -> None:
    files = write_files(folder, blocks)
    rows = {
        kind: measure(path, folder / "model", cold=False, with_forward=True) for kind, path in files.items()
    }
    print(f"Reduced-depth real-width Wan I2V transformer ({blocks} of 40 blocks), warm, measured on CPU\n")
    print(
        "| file | file GB | anon peak GB | load GB/s | plain read GB/s | load / read | forward s | x bf16 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    bf16 = rows["bf16"]["forward_s"]
    for kind, r in rows.items():
        print(f"| {kind} | {r['file_gb']:.2f} | {r['anon_peak_gb']:.2f} | {r['load_gbps']:.2f} | "
              f"{r['read_gbps']:.2f} | {r['load_gbps'] / r['read_gbps']:.0%} | {r['forward_s']:.2f} | "
              f"{r['forward_s'] / bf16:.2f} |")  # fmt: skip
    print("\nforward = 1560 tokens (1 latent frame of 480x832), the reduced-depth transformer, bf16 compute.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2)
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--forward", action="store_true")
    parser.add_argument("--blocks", type=int, default=40, help="< 40: the quick reduced-depth run")
    parser.add_argument("--formats", default=",".join(FORMATS), help="GGUF file types (bench/gguf_files.py)")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per format and mode")
    parser.add_argument("--folder", default=None, help="where the 8-18 GB files are written (one at a time)")
    parser.add_argument(
        "--profile",
        nargs=2,
        metavar=("FILE", "REPO"),
        help="where a warm load of FILE (config in the diffusers folder REPO) spends its time",
    )
    a = parser.parse_args()
    if a.profile:
        print("| phase (cProfile, cumulative) | s |\n|---|---|\n" + profile(*a.profile))
        return
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], a.cold, a.forward)))
        return
    folder = Path(tempfile.mkdtemp(prefix="wan-load-", dir=a.folder))
    try:
        if a.blocks < 40:
            reduced(folder, a.blocks)
        else:
            full_size(folder, a.formats.split(","), a.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
