"""Files and the comparison table for bench/rehearsal.py (see its docstring for the method)."""

from __future__ import annotations

from pathlib import Path

# measured phase (bench/rss_phases.py) -> the planner's phase (model/memory/host.py)
PLANNER_PHASE = {"load transformer": "load", "load text encoder": "load", "load image encoder, vae": "load",
                 "apply": "apply", "encode": "encode", "image": "encode", "vae_encode": "denoise",
                 "denoise": "denoise", "decode": "decode"}  # fmt: skip
BEFORE_DEVICE_SHARE = ("imports", "load", "load transformer")  # GPU-placed parts not loaded yet


def prepare(folder: Path, plan, max_host_gb: float, device_gb: float) -> tuple[Path | None, str]:
    """Write what the plan needs (once); (GGUF path, "") or (None, why the plan is skipped)."""
    import psutil

    from bench import gguf_files, rehearsal_files
    from wan_demo.model.memory import host

    machine = psutil.virtual_memory().total / 1e9
    limit = max_host_gb or 0.85 * machine
    need = plan.host_ram_gb - host.CUDA_HOST_GB - min(plan.host.pinned_by_phase.values()) + device_gb
    if need > limit:
        return (
            None,
            f"its host side needs ~{need:.1f} GB here, over {limit:.1f} GB of this {machine:.0f} GB machine",
        )
    model = folder / "model"
    if not (model / ".complete").exists():
        print(f"writing the full-size model to {model} (~26 GB) ...", flush=True)
        rehearsal_files.write_model(model)
        (model / ".complete").touch()
    gguf = folder / f"wan2.1-i2v-14b-480p-{plan.weights}.gguf"
    for other in folder.glob("*.gguf"):  # disk: one transformer file at a time
        if other != gguf:
            other.unlink()
    if not gguf.exists():
        print(f"writing {gguf.name} ...", flush=True)
        gguf_files.write(gguf.with_suffix(".part"), gguf_files.real_shapes(), plan.weights)
        gguf.with_suffix(".part").rename(gguf)
    return gguf, ""


def transient_share_gb(plan, measured: str) -> float:
    """What a GPU holds instead of this CPU while a component computes, at the rehearsal's size (81
    frames at 32x32): a GGUF layer's dequantization temporaries and the activations (estimated)."""
    from wan_demo.model.memory import weights as memory_weights
    from wan_demo.model.memory.estimate import (
        DEQUANT_COPIES,
        Shape,
        transformer_activations_gb,
        vae_activations_gb,
    )
    from wan_demo.model.memory.sizes import real_sizes

    shape = Shape(81, 32, 32)
    if measured == "denoise":
        t = memory_weights.with_weights(dict(real_sizes()), plan.weights)["transformer"]
        dequant = t.largest_leaf_params * 2 * DEQUANT_COPIES / 1e9 if plan.weights.startswith("Q") else 0.0
        return dequant + transformer_activations_gb(shape, 5120, 13824)
    if measured in ("decode", "vae_encode"):
        return vae_activations_gb(shape, 96, plan.vae_tiling)
    return 0.0


def compare(plan, result: dict, device_gb: float) -> dict[str, dict]:
    """Per planner phase: estimate (CPU side) vs measured anonymous peak - GPU share + computed pinned."""
    from wan_demo.model.memory import host

    out: dict[str, dict] = {}
    for measured, phase in PLANNER_PHASE.items():
        stats = result["phases"].get(measured)
        if not stats:
            continue
        share = (0.0 if measured in BEFORE_DEVICE_SHARE else device_gb) + transient_share_gb(plan, measured)
        host_gb = stats["peak_anon"] - share
        row = out.setdefault(phase, {"measured_gb": 0.0, "file_gb": 0.0, "share_gb": 0.0})
        row["share_gb"] = max(row["share_gb"], share) if host_gb > row["measured_gb"] else row["share_gb"]
        row["measured_gb"] = max(row["measured_gb"], host_gb)
        row["file_gb"] = max(row["file_gb"], stats["peak_file"])
    for phase, row in out.items():
        row["pinned_gb"] = plan.host.pinned_by_phase.get(phase, 0.0)
        row["estimate_gb"] = plan.host.phases[phase] - host.CUDA_HOST_GB
        row["total_gb"] = row["measured_gb"] + row["pinned_gb"]
    return out


def print_report(results: list[tuple]) -> dict[str, float]:
    """Prints the tables; returns {machine: measured + pinned peak GB}."""
    print("\nPer phase (GB; measured on CPU: anonymous RSS peak minus what a GPU would hold; pinned: "
          "computed; estimate: the planner, CPU side, CUDA runtime left out on both sides)\n")  # fmt: skip
    print("| machine | phase | estimate | measured - GPU share | GPU share | pinned | measured + pinned "
          "| est / (meas + pin) | file-backed measured |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    summary = []
    for plan, result, device_gb in results:
        rows = compare(plan, result, device_gb)
        for phase, r in rows.items():
            print(f"| {result['row']} | {phase} | {r['estimate_gb']:.2f} | {r['measured_gb']:.2f} | "
                  f"{r['share_gb']:.2f} | {r['pinned_gb']:.2f} | {r['total_gb']:.2f} | "
                  f"{r['estimate_gb'] / max(r['total_gb'], 1e-9):.2f} | {r['file_gb']:.2f} |")  # fmt: skip
        est = max(r["estimate_gb"] for r in rows.values())
        got = max(r["total_gb"] for r in rows.values())
        summary.append((result["row"], plan, est, got, result))
    print("\n| machine | weights | plan | host RAM estimate (peak) | measured + pinned (peak) | ratio | "
          "page cache estimate | file-backed measured (denoise) | baseline measured |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for row, plan, est, got, result in summary:
        file = result["phases"].get("denoise", {}).get("peak_file", 0.0)
        base = result["baseline"]["anon_gb"]
        print(f"| {row} | {plan.weights} | {plan.summary} | {est:.2f} | {got:.2f} | {est / got:.2f} | "
              f"{plan.host.page_cache_gb:.2f} | {file:.2f} | {base:.2f} |")  # fmt: skip
    return {row: round(got, 2) for row, _plan, _est, got, _result in summary}
