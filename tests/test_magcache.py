"""MagCache with the published Wan2.1 I2V 480P ratios: the skipped steps are the authors' (their loop
written out below from MagCache4Wan2.1/magcache_generate.py `magcache_forward`), at 40 steps and at
other step counts by their interpolation rule; settings are checked; state never leaks between runs.

The parity with diffusers' hook applied by hand to the reference recipe is in test_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.forwards import ForwardCounter
from wan_demo.core.settings import Settings
from wan_demo.model import magcache, speed
from wan_demo.model.tiny import build_tiny_pipeline

MAGCACHE = Settings(cache="magcache")


def authors_skips(steps: int, threshold: float, k: int, retention: float) -> tuple[list[int], list[int]]:
    """The steps each branch (cond, uncond) skips by the authors' loop: one counter over the
    interleaved calls, per-branch accumulators, ratios interpolated per column (nearest_interp)."""
    ratios = np.array(magcache.WAN21_I2V_480P_RATIOS)
    if steps != magcache.CALIBRATED_STEPS:
        columns = [_nearest(ratios[b::2], steps) for b in (0, 1)]
        ratios = np.stack(columns, axis=1).reshape(-1)
    calls = 2 * steps
    acc, err, run, skips = [1.0, 1.0], [0.0, 0.0], [0, 0], ([], [])
    for cnt in range(calls):
        b = cnt % 2
        if cnt < int(calls * retention):
            continue
        acc[b] *= ratios[cnt]
        run[b] += 1
        err[b] += abs(1 - acc[b])
        if err[b] < threshold and run[b] <= k:
            skips[b].append(cnt // 2)
        else:
            acc[b], err[b], run[b] = 1.0, 0.0, 0
    return skips


def _nearest(column: np.ndarray, length: int) -> np.ndarray:
    if length == 1:
        return column[-1:]
    scale = (len(column) - 1) / (length - 1)
    return column[np.round(np.arange(length) * scale).astype(int)]


def _run(pipe, steps: int, callback=None) -> torch.Tensor:
    return pipe(
        image=Image.new("RGB", (32, 32), (30, 140, 90)), prompt="a dog", negative_prompt="blur",
        height=32, width=32, num_frames=5, num_inference_steps=steps, guidance_scale=5.0,
        output_type="latent", generator=torch.Generator("cpu").manual_seed(0),
        callback_on_step_end=callback,
    ).frames  # fmt: skip


@pytest.fixture(scope="module")
def cached():
    """The tiny pipeline with a forward counter; speed.activate puts MagCache on per run."""
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe, ForwardCounter(pipe.transformer)


def _skips(cached, steps: int, settings: Settings = MAGCACHE) -> tuple[list[int], list[int]]:
    pipe, counter = cached
    speed.activate(pipe, "quality", settings, steps)
    counter.reset()
    _run(pipe, steps)
    assert counter.calls == 2 * steps
    return counter.skipped_steps(True, 0), counter.skipped_steps(True, 1)


def test_published_ratios_are_the_authors_list():
    ratios = magcache.WAN21_I2V_480P_RATIOS
    assert len(ratios) == 2 * magcache.CALIBRATED_STEPS and ratios[:2] == (1.0, 1.0)
    assert ratios[2:4] == (0.98783, 0.98993) and ratios[-2:] == (0.92617, 0.92616)
    cond, uncond = np.array(ratios[0::2]), np.array(ratios[1::2])
    assert np.abs(cond - uncond).max() <= 0.0021  # why one list serves both CFG branches


def test_forty_steps_skip_the_authors_steps(cached):
    cond, uncond = _skips(cached, 40)
    expected = authors_skips(40, 0.12, 2, 0.2)
    assert (cond, uncond) == expected
    assert cond == [8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23, 24, 26, 27, 29, 30, 32, 33, 35, 37, 39]


@pytest.mark.parametrize("steps", [10, 20, 30, 50])
def test_other_step_counts_interpolate_by_the_authors_rule(cached, steps):
    cond, uncond = _skips(cached, steps)
    assert cond == uncond == authors_skips(steps, 0.12, 2, 0.2)[0]
    assert cond and min(cond) >= round(0.2 * steps)  # the retained first steps always run


def test_the_authors_faster_setting(cached):
    """README's E024K6R02 (threshold 0.24, K 6): more skips, still the authors' steps."""
    settings = MAGCACHE.replace(magcache_threshold=0.24, magcache_max_skip=6)
    cond, _ = _skips(cached, 40, settings)
    assert cond == authors_skips(40, 0.24, 6, 0.2)[0] and len(cond) == 25


@pytest.mark.parametrize("steps", [3, 5, 8, 9, 13, 17, 25, 33, 64, 81, 100])
def test_conditional_calls_skip_the_authors_steps_at_any_count(cached, steps):
    """diffusers' hook on the tiny transformer, called directly under the "cond" cache context as
    the pipeline does (cheaper than sampling): the authors' conditional steps at odd counts too.
    (Their unconditional branch may start one step earlier: see model.magcache.cond_ratios.)"""
    pipe, counter = cached
    speed.activate(pipe, "quality", MAGCACHE, steps)
    counter.reset()
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 36, 1, 4, 4, generator=g)
    text = torch.randn(1, 8, 32, generator=g)
    image = torch.randn(1, 4, 16, generator=g)
    with torch.no_grad():
        for i in range(steps):
            with pipe.transformer.cache_context("cond"):
                pipe.transformer(latents, torch.tensor([999 - i]), text, image, return_dict=False)
    assert counter.skipped_steps(cfg=False) == authors_skips(steps, 0.12, 2, 0.2)[0]


def test_a_failed_run_leaves_no_state_behind(cached):
    """A run stopped half-way (an exception in the step callback) keeps the hook's step counter and
    residual; the next run must still skip exactly what a fresh run skips."""
    pipe, counter = cached
    speed.activate(pipe, "quality", MAGCACHE, 40)

    def boom(_pipe, i, _t, kwargs):
        if i == 15:
            raise RuntimeError("stop")
        return kwargs

    with pytest.raises(RuntimeError):
        _run(pipe, 40, boom)
    assert _skips(cached, 40) == authors_skips(40, 0.12, 2, 0.2)


def test_step_count_changes_reapply_and_fast_mode_turns_it_off(cached):
    pipe, _ = cached
    assert _skips(cached, 20)[0] == authors_skips(20, 0.12, 2, 0.2)[0]
    assert _skips(cached, 40)[0] == authors_skips(40, 0.12, 2, 0.2)[0]
    speed.activate(pipe, "fast", MAGCACHE, 4)
    assert not pipe.transformer.is_cache_enabled
    speed.activate(pipe, "quality", MAGCACHE.replace(cache="off"), 40)
    assert not pipe.transformer.is_cache_enabled


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"magcache_threshold": 0.0}, "magcache_threshold 0.0: must be > 0"),
        ({"magcache_threshold": 2.0}, "magcache_threshold 2.0: must be > 0 and <= 1"),
        ({"magcache_max_skip": 0}, "magcache_max_skip 0: must be at least 1"),
        ({"magcache_retention": 1.0}, "magcache_retention 1.0: must be >= 0 and < 1"),
    ],
)
def test_bad_settings_are_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=message):
        speed.cache_config(MAGCACHE.replace(**changes), 40)


def test_config_carries_the_settings():
    config = speed.cache_config(MAGCACHE.replace(magcache_max_skip=4), 30)
    assert (config.threshold, config.max_skip_steps, config.retention_ratio) == (0.12, 4, 0.2)
    assert config.num_inference_steps == 30 and len(config.mag_ratios) == 30


def test_docs_python_block_runs():
    """docs/speed.md's Python block (after `<!-- speed-magcache-config -->`), run as written."""
    import contextlib
    import io
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "speed.md").read_text()
    code = re.search(r"<!-- speed-magcache-config -->\s*```python\n(.*?)```", text, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/speed.md", "exec"), {})  # noqa: S102 - our own docs
    assert out.getvalue().split() == ["0.12", "2", "0.2", "30", "30"]
