"""Hugging Face ZeroGPU: run each generation inside a `spaces.GPU` call.

On ZeroGPU a CUDA device exists only inside a function decorated with `spaces.GPU`, and that function
runs in a process forked from the server (arguments and result are pickled). Design:

- The one Worker still orders all generations (UI, Gradio API, REST). On ZeroGPU its run function
  is `GpuBridge.run` (same signature as `generate`), which calls the decorated `_generate_on_gpu`.
- The engine is not pickled: it lives in the module global `_BRIDGE`, set before the first fork,
  so the forked child inherits it (spaces moves its tensors onto the GPU there).
- Progress and Cancel cross the process boundary through fork-inherited multiprocessing objects:
  the child reports into a Queue the server drains; the server sets an Event the child's step
  callback checks. A cancelled child returns None (an exception would arrive as a generic error).
- The GPU lease is sized per request by `gpu_seconds` from the request's run plan (core.plan).

Off ZeroGPU `spaces.GPU` returns the function unchanged, so the same path runs in-process.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wan_demo.core.plan import CostModel, EngineInfo, RunPlan, estimate_seconds, plan_run
from wan_demo.core.request import GenerationCancelled, GenerationResult, ValidRequest
from wan_demo.core.settings import Settings
from wan_demo.model.engine import Engine

if TYPE_CHECKING:
    from wan_demo.generate import ProgressFn

# Cost model for a ZeroGPU "large" slice (half an H200), fitted to published full-H200 figures:
# 80 transformer forwards at 81x480x832 take ~366 s there (~4.6 s each), so ~9 s on half a card.
ZEROGPU_COST = CostModel(
    forward_s=9.0,  # one transformer forward at 81 frames x 480x832, ZeroGPU large
    decode_s=12.0,  # VAE decode of one 81-frame 480P segment
    setup_s=30.0,  # weights onto the GPU, text + image encoders, MP4 encode
)
SAFETY = 1.3  # margin: an over-run lease is aborted mid-generation
MIN_SECONDS = 30
POLL_S = 0.2  # how often the server side forwards progress and checks for Cancel

RunFn = Callable[..., GenerationResult]


def enabled() -> bool:
    """True on a ZeroGPU Space (the platform sets SPACES_ZERO_GPU)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def gpu_seconds(plan: RunPlan) -> int:
    """GPU lease in whole seconds for one planned clip (the plan's forwards and segments, priced
    with ZeroGPU's cost model, plus a safety margin)."""
    seconds = estimate_seconds(ZEROGPU_COST, plan.width, plan.height, plan.segments, plan.forwards)
    return max(MIN_SECONDS, math.ceil(seconds * SAFETY))


class GpuBridge:
    """Runs `run_fn` (default `generate`) inside spaces.GPU, forwarding progress and Cancel."""

    def __init__(self, engine: Engine, run_fn: RunFn | None = None, gpu: Callable | None = None):
        global _BRIDGE
        if run_fn is None:
            from wan_demo.generate import generate as run_fn  # torch: once a model exists

        self.engine = engine
        self.run_fn = run_fn
        ctx = multiprocessing.get_context("fork")  # ZeroGPU forks; objects must exist before it
        self.stop = ctx.Event()
        self.progress: Any = ctx.Queue()
        if gpu is None:
            import spaces

            gpu = spaces.GPU(duration=duration_for)
        self._call = gpu(_generate_on_gpu)
        _BRIDGE = self

    def run(
        self,
        request: ValidRequest,
        engine: Engine,
        settings: Settings,
        on_progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
    ) -> GenerationResult:
        """Same contract as generate(): raises GenerationCancelled when `stop` is set mid-run."""
        self.stop.clear()
        done = threading.Event()
        pump = threading.Thread(target=self._pump, args=(on_progress, stop, done), daemon=True)
        pump.start()
        try:
            result = self._call(request, settings)
        finally:
            done.set()
            pump.join()
        if result is None:
            raise GenerationCancelled("cancelled on the GPU worker")
        return result

    def _pump(self, on_progress: ProgressFn | None, stop: threading.Event | None, done: threading.Event):
        while True:
            if stop is not None and stop.is_set():
                self.stop.set()
            try:
                progress = self.progress.get(timeout=POLL_S)
            except queue.Empty:
                if done.is_set():
                    return
                continue
            if on_progress is not None:
                on_progress(progress)


_BRIDGE: GpuBridge | None = None  # inherited by the ZeroGPU child process through fork


def _generate_on_gpu(request: ValidRequest, settings: Settings) -> GenerationResult | None:
    bridge = _BRIDGE
    if bridge is None:
        raise RuntimeError("GpuBridge was not created before the first GPU call")
    try:
        return bridge.run_fn(request, bridge.engine, settings, bridge.progress.put, bridge.stop)
    except GenerationCancelled:
        return None


def duration_for(request: ValidRequest, settings: Settings) -> int:
    """spaces.GPU duration callable: receives the decorated function's arguments."""
    engine = _BRIDGE.engine if _BRIDGE is not None else None
    info = engine.plan_info() if engine is not None else EngineInfo()
    return gpu_seconds(plan_run(request, settings, info))
