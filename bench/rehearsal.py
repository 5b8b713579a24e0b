"""Full-size rehearsal of the consumer memory plans on the CPU: python -m bench.rehearsal [--rows 8x16,...]

For each machine (card GB x host RAM GB) the planner's recommendation (model.memory.start.recommend)
names a GGUF file and a plan. The rehearsal writes the full-size model (bench/rehearsal_files.py: the
Diffusers layout, fp32 text-encoder shards) and that city96-layout GGUF file, then in a fresh process
runs the app's real loading and plan application (model.engine.load_engine with the plan, the CPU
standing in for the device) and one short generation through all 40 blocks (81 frames at 32x32 px,
2 steps, guidance 1), sampling the process's RSS every 5 ms (/proc/self/status: anonymous and
file-backed apart), attributed to the phase running (bench/rss_phases.py).

A CPU cannot pin memory or hold a GPU's share, so two terms are computed from the real tensor list:
the pinned copies the plan makes on a GPU host (upfront, or the two groups in flight when lazy) and
the bytes a GPU would hold instead of the host (components the plan puts on the GPU). The table
compares the planner's host-RAM estimate (what start-up checks on a user's machine) with the
measured peak (anonymous, minus the GPU's share) + the computed pinned bytes, phase by phase; the
CUDA runtime's host memory (host.CUDA_HOST_GB) is an estimate on both sides and left out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROWS = ("8x16", "8x32", "12x32", "16x32")  # the consumer machines of the memory table
PHASES = ("load", "apply", "encode", "denoise", "decode")


def plan_for_row(row: str):
    from wan_demo.model.memory.estimate import Shape
    from wan_demo.model.memory.plan import Budget
    from wan_demo.model.memory.sizes import real_sizes
    from wan_demo.model.memory.start import recommend

    vram, ram = (float(x) for x in row.split("x"))
    return recommend(Budget(vram, ram, "rehearsal"), real_sizes(), Shape())


def child(folder: str, gguf: str, row: str) -> dict:
    """One plan in this (fresh) process: load, apply, generate; RSS per phase."""
    from bench.rss_phases import PhaseRss, instrument

    rss = PhaseRss().start("imports")
    import wan_demo.server  # noqa: F401  # the app's imports (gradio, fastapi, diffusers, ...)

    baseline = rss.now()
    from PIL import Image

    from wan_demo.core.request import GenerationRequest
    from wan_demo.core.settings import Settings
    from wan_demo.core.validate import validate
    from wan_demo.generate import generate
    from wan_demo.model.engine import load_engine

    vram, ram = (float(x) for x in row.split("x"))
    plan = plan_for_row(row)
    settings = Settings(model=folder, transformer_file=gguf, device="cpu", offline=True, vram_gb=vram,
                        ram_gb=ram, prompt_extender="off", preview_every_s=0,
                        output_dir=Path(folder).parent / "outputs")  # fmt: skip
    rss.phase("load")
    instrument(rss)
    engine = load_engine(settings, plan=plan)
    engine.max_area = 32 * 32  # a short generation: the weights, not the pixels, are what is measured
    rss.watch(engine.pipe)
    request = validate(GenerationRequest(Image.new("RGB", (64, 64), "gray"), "a cat walks", seed=1, steps=2,
                                         guidance=1.0, speed_mode="quality"))  # fmt: skip
    result = generate(request, engine, settings)
    rss.phase("done")
    rss.stop()
    return dict(
        row=row,
        baseline=baseline,
        phases=rss.report(),
        frames=result.num_frames,
        plan=engine.memory_plan,
        loads=getattr(engine.prompts.encoder, "loads", None),
    )


def device_share_gb(plan) -> float:
    """What a GPU would hold instead of this CPU: the weights of components placed on the GPU."""
    from wan_demo.model.memory import weights as memory_weights
    from wan_demo.model.memory.sizes import real_sizes

    sizes = memory_weights.with_weights(dict(real_sizes()), plan.weights)
    layout = plan.layout
    return sum(s.weights_gb(layout.fp8[n]) for n, s in sizes.items() if layout.placement[n] == "gpu")


def run(folder: Path, gguf: Path, row: str) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "bench.rehearsal", "--child", str(folder), str(gguf), row]
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"rehearsal {row} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    (folder.parent / f"result-{row}.json").write_text(json.dumps(result, indent=1))  # kept for the report
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", nargs=3)
    p.add_argument("--rows", default=",".join(ROWS), help="machines as VRAMxRAM GB, e.g. 8x16,12x32")
    p.add_argument("--folder", default="/tmp/wan-rehearsal", help="where the full-size files go (~45 GB)")
    p.add_argument("--max-host-gb", type=float, default=0.0, help="skip plans needing more (0 = 85%% of RAM)")
    p.add_argument("--json", help="also write {machine: measured + pinned peak GB} here (bench.memory_plan)")
    p.add_argument("--report-only", action="store_true", help="print the report from the saved results")
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(*a.child)))
        return
    from bench.rehearsal_report import prepare, print_report

    folder = Path(a.folder)
    results = []
    for row in a.rows.split(","):
        plan = plan_for_row(row)
        saved = folder / f"result-{row}.json"
        if a.report_only:
            if saved.exists():
                results.append((plan, json.loads(saved.read_text()), device_share_gb(plan)))
            continue
        gguf, skip = prepare(folder, plan, a.max_host_gb, device_share_gb(plan))
        if skip:
            print(f"{row}: skipped ({skip})")
            continue
        print(f"{row}: {plan.weights} {plan.summary}", flush=True)
        results.append((plan, run(folder / "model", gguf, row), device_share_gb(plan)))
    peaks = print_report(results)
    if a.json:
        Path(a.json).write_text(json.dumps(peaks, indent=1))


if __name__ == "__main__":
    main()
