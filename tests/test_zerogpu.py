"""ZeroGPU: the lease-size function, and the bridge that carries progress and Cancel to the GPU call.

Off Spaces `spaces.GPU` returns the function unchanged, so the bridge runs in-process on the tiny
model. A MOCK of ZeroGPU's process model (`fake_zerogpu`: run the call in a forked child with
pickled arguments) checks that progress and Cancel cross a real process boundary.
"""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
from conftest import ask, make_image

from wan_demo.core.plan import EngineInfo, plan_run
from wan_demo.core.request import GenerationCancelled, Progress
from wan_demo.core.settings import MAX_AREA, Settings
from wan_demo.web import zerogpu


@pytest.fixture(autouse=True)
def restore_bridge(monkeypatch):
    """GpuBridge() sets the module's fork-inherited global; put it back after each test."""
    monkeypatch.setattr(zerogpu, "_BRIDGE", zerogpu._BRIDGE)


def lease(size=(832, 480), length=5, steps=4, guidance=1.0, max_area=MAX_AREA) -> int:
    request = ask(make_image(*size), "x", video_length_s=length, steps=steps, guidance=guidance)
    return zerogpu.gpu_seconds(plan_run(request, Settings(), EngineInfo(max_area=max_area)))


def test_gpu_seconds_grows_with_frames_size_steps_and_cfg():
    base = lease()
    assert lease(length=10) > base
    assert lease(steps=8) > base
    assert lease(guidance=5.0) > base
    assert lease(size=(416, 240), max_area=416 * 240) < base
    assert lease(size=(64, 64), steps=1, max_area=64 * 64) == 40  # setup alone: 30 s x 1.3, rounded up


def test_gpu_seconds_figures():
    # fast mode, 5 s at 480P: (30 + 4 x 9 + 12) x 1.3 = 101.4 -> 102 s
    assert lease() == 102
    # quality mode (40 steps + CFG) needs far more than ZeroGPU grants: it is refused up front
    assert lease(steps=40, guidance=5.0) > 300


def test_enabled_follows_the_spaces_env(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zerogpu.enabled()
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zerogpu.enabled()


def test_duration_for_a_request(image, settings, monkeypatch):
    request = ask(image.resize((832, 480)), "x", video_length_s=10, steps=4, guidance=1.0)
    monkeypatch.setattr(zerogpu, "_BRIDGE", None)  # no engine: the real model's 480P budget
    assert zerogpu.duration_for(request, settings) == lease(length=10)
    assert lease(length=10) == 164  # (30 + 8 forwards x 9 + 2 decodes x 12) x 1.3 = 163.8 -> 164


def test_bridge_runs_generate_in_process_and_forwards_progress(engine, settings, image):
    bridge = zerogpu.GpuBridge(engine, gpu=lambda fn: fn)  # what spaces.GPU does off ZeroGPU
    seen: list[Progress] = []
    result = bridge.run(ask(image, "waves", seed=3), engine, settings, seen.append)
    assert (result.num_frames, result.seed_used) == (81, 3)
    assert result.video_path.is_file()
    assert [p.step for p in seen if p.stage == "denoise"] == [1, 2]


def test_bridge_cancel_in_process(engine, settings, image):
    bridge = zerogpu.GpuBridge(engine, gpu=lambda fn: fn)
    stop = threading.Event()
    stop.set()
    with pytest.raises(GenerationCancelled):
        bridge.run(ask(image, "waves"), engine, settings, None, stop)
    assert not settings.output_dir.exists()  # cancelled before any output was written


# --- MOCK of ZeroGPU's process model: not the real platform, only its fork + pickle boundary ----
STEPS = 400


def fake_zerogpu(fn):
    def call(*args):
        with multiprocessing.get_context("fork").Pool(1) as pool:
            return pool.apply(fn, args)

    return call


def fake_generate(request, engine, settings, on_progress, stop):
    """Stands in for generate() in the child: reports steps, honours stop (no torch after fork)."""
    for step in range(1, STEPS + 1):
        if stop.is_set():
            raise GenerationCancelled(f"after {step - 1}")
        on_progress(Progress("denoise", step, STEPS))
        time.sleep(0.01)
    return "finished"


def test_progress_and_cancel_cross_the_fork(image, settings):
    bridge = zerogpu.GpuBridge(engine=None, run_fn=fake_generate, gpu=fake_zerogpu)  # type: ignore[arg-type]
    stop = threading.Event()
    seen: list[int] = []

    def on_progress(p: Progress) -> None:
        seen.append(p.step)
        if p.step == 5:
            stop.set()  # what Task.cancel() does in the server process

    with pytest.raises(GenerationCancelled):
        bridge.run(ask(image, "x"), None, settings, on_progress, stop)  # type: ignore[arg-type]
    assert seen[:5] == [1, 2, 3, 4, 5]
    assert max(seen) < STEPS  # the child stopped early instead of finishing
