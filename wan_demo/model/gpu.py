"""GPU memory of this process, for the worker's metrics (jobs/metrics.py): what torch's caching
allocator holds per CUDA device. Empty without CUDA (CPU hosts, API nodes never call it)."""

from __future__ import annotations

from typing import Any

import torch


def memory_stats() -> list[dict[str, Any]]:
    """Per visible CUDA device: bytes allocated by tensors now, reserved by the allocator, and the
    allocation peak since the process started (torch.cuda.max_memory_allocated)."""
    if not torch.cuda.is_available():
        return []
    return [
        {
            "device": f"cuda:{i}",
            "allocated": torch.cuda.memory_allocated(i),
            "reserved": torch.cuda.memory_reserved(i),
            "peak": torch.cuda.max_memory_allocated(i),
        }
        for i in range(torch.cuda.device_count())
    ]
