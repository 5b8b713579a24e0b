"""Shared fixtures: one tiny engine per test session (importing torch + diffusers costs ~4 s).

Tiers: the default run is the fast tier (`python -m pytest -q`). Tests of another tier carry its
marker and are skipped unless it is selected with `-m <tier>` (or RUN_<TIER>=1); `.ci/run` runs each:
- `slow`: real-size runs (minutes);
- `browser`: headless Chromium clicking through the page (skipped without Debian chromium);
- `system`: whole processes started, killed and restarted (SIGKILL, restarts, clusters, torchrun).
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from PIL import Image
from ui_server import CHROMIUM  # Debian's; browser tests skip without it, except in CI (.ci/run)

from wan_demo.core.request import GenerationRequest, ValidRequest
from wan_demo.core.settings import Settings
from wan_demo.core.validate import validate

TEST_AREA = 64 * 64  # tiny model output budget in tests: 81 frames at 64x64 take ~2 s
TIERS = {  # marker -> what its tests do
    "slow": "real-size runs (minutes)",
    "browser": "headless Chromium tests; need Debian chromium",
    "system": "whole processes started, killed or restarted (SIGKILL, restarts, clusters, torchrun)",
}


def pytest_configure(config):
    for tier, what in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {what}; select with -m {tier} or RUN_{tier.upper()}=1")


def tier_selected(config, tier: str) -> bool:
    expression = config.getoption("-m") or ""
    named = tier in expression and f"not {tier}" not in expression
    return named or os.environ.get(f"RUN_{tier.upper()}") == "1"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CI") and tier_selected(config, "browser") and not CHROMIUM.exists():
        raise pytest.UsageError(f"the browser tier needs Debian chromium at {CHROMIUM} (package chromium)")
    skips = {
        tier: pytest.mark.skip(reason=f"{tier} tier: select with -m {tier} or RUN_{tier.upper()}=1")
        for tier in TIERS
        if not tier_selected(config, tier)
    }
    for item in items:
        for tier, skip in skips.items():
            if item.get_closest_marker(tier) is not None:
                item.add_marker(skip)


def make_image(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def tiny_latents(pipe):
    """Latents of one short fixed call (32x32, 5 frames, 2 steps, CFG on, seed 0): memory plans and
    weight formats are compared on these."""
    import torch

    return pipe(
        image=Image.new("RGB", (32, 32), (200, 80, 40)), prompt="a cat", height=32, width=32,
        num_frames=5, num_inference_steps=2, guidance_scale=3.0, output_type="latent",
        generator=torch.Generator("cpu").manual_seed(0),
    ).frames  # fmt: skip


def ask(image: Image.Image, prompt: str, **fields) -> ValidRequest:
    """A validated request, as every edge makes one (GenerationRequest -> validate)."""
    return validate(GenerationRequest(image, prompt, **fields))


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        model="tiny", device="cpu", tiny_max_area=TEST_AREA, steps=2, output_dir=tmp_path / "outputs",
        data_dir=tmp_path / "data", prompt_extender="rules",
    )  # fmt: skip


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (bench/services.py: initdb + pg_ctl in /tmp).
    CI installs the package (.ci/run), so there a missing server fails instead of skipping."""
    from bench.services import TempPostgres, postgres_bin

    if postgres_bin() is None:
        message = "PostgreSQL server binaries not found: apt-get install -y postgresql"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = TempPostgres().start()
    yield server
    server.stop()


@pytest.fixture
def database_url(postgres, request) -> str:
    """A fresh, empty database on the session's server."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return postgres.create_database(f"{name}_{next(_DB_NUMBERS)}")


_DB_NUMBERS = itertools.count()


@pytest.fixture(scope="session")
def engine():
    from wan_demo.model.engine import load_engine

    return load_engine(Settings(model="tiny", device="cpu", tiny_max_area=TEST_AREA))


@pytest.fixture
def image() -> Image.Image:
    return make_image()
