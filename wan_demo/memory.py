"""Memory strategy for the loaded pipeline.

Placeholder for the memory-planner issue: the planner and every strategy land here.
"""

from __future__ import annotations

from wan_demo.settings import Settings


def apply(pipe, settings: Settings, device: str, is_tiny: bool) -> str:
    """Place the pipeline on `device` with the configured strategy; returns its description."""
    if device == "cuda" and not is_tiny and settings.memory_mode in ("auto", "model_offload"):
        pipe.enable_model_cpu_offload()
        return "model_offload"
    pipe.to(device)
    return "resident"
