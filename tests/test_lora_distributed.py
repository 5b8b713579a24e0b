"""Community LoRAs with context parallelism: 2 ranks over gloo (the pattern of test_distributed.py).
Rank 0 switches the adapters for a request; rank 1 mirrors the same files and weights from the
segment message, so the sharded run gives the one-process frames."""

from __future__ import annotations

import subprocess

import pytest
import torch
from conftest import TEST_AREA
from test_distributed import assert_same_video, free_port, segment, start_follower

from bench.lora_files import write_wan
from wan_demo.core.request import LoraChoice
from wan_demo.core.settings import Settings
from wan_demo.model import distributed
from wan_demo.model.engine import load_engine
from wan_demo.model.tiny import build_tiny_pipeline

pytestmark = pytest.mark.system  # a second rank in its own process


@pytest.fixture
def library(tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    write_wan(build_tiny_pipeline().transformer, folder / "motion.safetensors", alpha=None)
    return folder


def test_two_ranks_apply_the_same_loras(monkeypatch, tmp_path, library):
    port = free_port()
    for k, v in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1").items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MASTER_PORT", str(port))
    follower_env = {"WAN_DEMO_LORA_DIR": str(library), "WAN_DEMO_DATA_DIR": str(tmp_path / "rank1")}
    follower = start_follower(port, 60.0, bare=True, extra=follower_env)
    settings = Settings(model="tiny", device="cpu", tiny_max_area=TEST_AREA, dist_timeout_s=60.0,
                        lora_dir=library, data_dir=tmp_path / "rank0")  # fmt: skip
    choices = (LoraChoice("motion.safetensors", 0.7),)
    group = None
    try:
        single = load_engine(settings)  # one process, no parallelism: the reference
        single.loras.apply(single.pipe, choices, fast=False)
        reference = segment(single)
        group = distributed.init(settings)
        engine = distributed.attach(load_engine(settings), group)
        engine.loras.apply(engine.pipe, choices, fast=False)  # what generate() does on rank 0
        assert_same_video(segment(engine), reference)
        engine.loras.apply(engine.pipe, (), fast=False)  # and off again on both ranks
        single.loras.apply(single.pipe, (), fast=False)
        plain = segment(single)
        assert_same_video(segment(engine), plain)
        assert abs(reference.astype(float) - plain.astype(float)).max() * 255 > 1  # the LoRA shows
    finally:
        if group is not None and torch.distributed.is_initialized():
            distributed.shutdown(group)
        try:
            follower.wait(timeout=30)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
