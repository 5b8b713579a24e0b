"""Multi-GPU path on CPU: 2 ranks over gloo with diffusers' Ulysses context parallelism.

Rank 0 is this pytest process (the role app.py's rank 0 plays: it owns the engine and calls
run_segment); rank 1 is a real `python app.py` started with the env vars torchrun sets, so the
follower hook in server.main is what runs. CPU-only workaround (named): diffusers' CP needs
`torch.accelerator.device_count() > 0`; distributed.init reports 1 device on a CPU-only host.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_AREA, make_image

from wan_demo.core.request import GenerationCancelled
from wan_demo.core.settings import Settings
from wan_demo.model import distributed, torchrun
from wan_demo.model.distributed_group import Group
from wan_demo.model.engine import load_engine
from wan_demo.model.memory.estimate import Shape
from wan_demo.model.pipeline import run_segment

ROOT = Path(__file__).resolve().parents[1]


# --- pure maths --------------------------------------------------------------------------------
def test_sequence_tokens_and_split():
    assert torchrun.sequence_tokens(832, 480, 81) == 21 * 30 * 52  # 32760 tokens at 480P
    assert not torchrun.needs_uneven_split(832, 480, 81, 8)
    assert torchrun.needs_uneven_split(624, 624, 81, 2)  # 21*39*39 is odd
    assert Shape(81, 480, 832, ranks=4).tokens_per_rank == 8190


def test_single_process_is_not_distributed():
    assert distributed.init(Settings(), environ={"WORLD_SIZE": "1"}) is None
    assert torchrun.world_size_from_env({}) == 1
    assert torchrun.ranks_from_env({}) == (1, 1)
    assert torchrun.ranks_from_env({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}) == (8, 4)


def test_planner_sizes_activations_per_rank_and_splits_host_ram(engine):
    """Under context parallelism each GPU holds all weights but 1/N of the tokens' activations,
    and the ranks on one host share its RAM (each keeps a full pipeline copy there)."""
    from wan_demo.model.memory import plan as memory
    from wan_demo.model.memory import start as memory_start
    from wan_demo.model.memory.sizes import real_sizes

    dims = (5120, 13824, 96)  # transformer dim, ffn dim, VAE base dim of the real model
    budget = memory.Budget(vram_gb=80, ram_gb=256, source="test")
    one = memory.estimate(memory.BY_NAME["resident"], real_sizes(), Shape(), budget, dims)
    four = memory.estimate(memory.BY_NAME["resident"], real_sizes(), Shape(ranks=4), budget, dims)
    assert four.per_component["transformer"]["vram_gb"] < one.per_component["transformer"]["vram_gb"]
    weights = real_sizes()["transformer"].weights_gb(False)
    assert four.per_component["transformer"]["vram_gb"] > weights  # weights are not sharded
    assert Shape(ranks=4).tokens_per_rank == -(-Shape().tokens // 4)
    settings = Settings(vram_gb=80, ram_gb=64)  # budgets as settings: no GPU needed to plan
    plan = memory_start.plan_for(engine.pipe, settings, "cuda:0", Shape(ranks=8), ranks_per_host=8)
    assert plan.budget.ram_gb == 8 and plan.budget.vram_gb == 80


# --- 2 ranks on CPU ----------------------------------------------------------------------------
SEGMENT = dict(prompt="a cat", negative_prompt="", width=64, height=64, num_frames=17, steps=2,
               guidance=5.0, shift=3.0)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# rank 1 without the UI imports (cheaper), for tests that do not exercise app.py itself
BARE_FOLLOWER = (
    "from wan_demo.core import settings; from wan_demo.model import distributed; s = settings.from_env([]); "
    "distributed.run_follower(s, distributed.init(s))"
)


def start_follower(
    port: int, timeout_s: float, bare: bool = False, extra: dict | None = None
) -> subprocess.Popen:
    """Rank 1 as torchrun would start it: `python app.py` with RANK/WORLD_SIZE/MASTER_* set
    (`extra`: more environment, e.g. WAN_DEMO_* settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAN_DEMO_")} | (extra or {})
    env.update(RANK="1", LOCAL_RANK="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               WAN_DEMO_MODEL="tiny", WAN_DEMO_DEVICE="cpu", WAN_DEMO_TINY_MAX_AREA=str(TEST_AREA),
               WAN_DEMO_DIST_TIMEOUT_S=str(timeout_s), OMP_NUM_THREADS="1")  # fmt: skip
    command = ["-c", BARE_FOLLOWER] if bare else ["app.py"]
    return subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)


@pytest.fixture
def two_ranks(monkeypatch, tmp_path, request):
    """Yield (rank-0 engine with CP attached, group, follower process); always cleans up."""
    timeout_s, bare = getattr(request, "param", (60.0, False))
    port = free_port()
    for k, v in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1").items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MASTER_PORT", str(port))
    follower = start_follower(port, timeout_s, bare)
    settings = Settings(model="tiny", device="cpu", tiny_max_area=TEST_AREA, dist_timeout_s=timeout_s)
    group = None
    try:
        group = distributed.init(settings)
        engine = distributed.attach(load_engine(settings), group)
        yield engine, group, follower
    finally:
        if group is not None and torch.distributed.is_initialized():
            distributed.shutdown(group)
        try:
            follower.wait(timeout=30)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
    assert torch.accelerator.device_count() == 0  # the CPU workaround was undone


def assert_same_video(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to one uint8 level (run_segment returns uint8 or [0, 1] floats)."""
    scale = 255.0 if a.dtype.kind == "f" else 1.0
    assert a.shape == b.shape and np.abs(a.astype(np.float64) - b.astype(np.float64)).max() * scale <= 1.0


def segment(engine, on_step=lambda _i: None, seed: int = 7) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    return run_segment(engine, image=make_image(), generator=generator, on_step=on_step, **SEGMENT)


@pytest.mark.system  # a second rank in its own process
def test_two_ranks_match_one_process_cancel_and_shutdown(two_ranks, engine):
    cp_engine, group, follower = two_ranks
    assert cp_engine.parallel is group and "Ulysses context parallel x2" in cp_engine.memory_plan
    reference = segment(engine)  # the session engine: one process, no parallelism
    frames = segment(cp_engine)
    assert frames.shape == (17, 64, 64, 3)
    assert_same_video(frames, reference)

    # cancel on rank 0 at step 1 of 2: both ranks stop at the same step and stay in step
    def cancel(i: int) -> None:
        raise GenerationCancelled(f"user cancelled at step {i + 1}")

    with pytest.raises(GenerationCancelled, match="user cancelled at step 1"):
        segment(cp_engine, on_step=cancel)
    again = segment(cp_engine, seed=8)
    assert_same_video(again, segment(engine, seed=8))

    distributed.shutdown(group)  # "stop" message: the follower's app.py returns cleanly
    assert follower.wait(timeout=30) == 0


@pytest.mark.system  # a second rank in its own process
@pytest.mark.parametrize("two_ranks", [(5.0, True)], indirect=True)
def test_stalled_rank_fails_the_request_instead_of_hanging(two_ranks):
    cp_engine, group, follower = two_ranks
    follower.send_signal(signal.SIGSTOP)  # alive but silent, like a hung GPU
    try:
        with pytest.raises(RuntimeError, match="did not answer within 5 s"):
            segment(cp_engine)
        with pytest.raises(RuntimeError, match="multi-GPU group is broken"):
            segment(cp_engine)
    finally:
        follower.send_signal(signal.SIGCONT)
        follower.kill()


def test_step_cache_is_refused_on_several_gpus(engine):
    """FirstBlockCache decides per rank from its own shard: ranks would disagree and hang."""
    group = Group(0, 2, "gloo", store=None, timeout_s=1.0, settings=Settings(cache="fbcache"))
    with pytest.raises(ValueError, match="cache='fbcache' is not supported on several GPUs"):
        distributed.attach(engine, group)
    assert engine.parallel is None
