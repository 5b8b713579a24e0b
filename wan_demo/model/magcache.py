"""MagCache for Wan2.1 I2V 14B 480P: the authors' calibrated magnitude ratios and their defaults, as
a diffusers `MagCacheConfig` (the hook, `diffusers.hooks.mag_cache`, does the skipping).

MagCache (arXiv 2506.09045) reuses the transformer blocks' residual from the last computed step
while the accumulated error it predicts from the calibrated ratios stays under a threshold. The
ratios alone decide which steps are skipped (no per-video measurement), so the schedule is fixed
per step count: at 40 steps with the defaults below, 21 of the 40 steps of each branch reuse the
cached residual (bench/forwards.py prints them).

Source of the data: github.com/Zehong-Ma/MagCache, file MagCache4Wan2.1/magcache_generate.py, last
changed in commit e1862e09110943638562513e0128c3c7f790540a (repository head df81cb1), line 1002:
the `mag_ratios` for `'480P' in args.ckpt_dir` of task i2v-14B; defaults from its argparse
(`--magcache_thresh 0.12`, `--magcache_K 2`, `--retention_ratio 0.2`).
"""

from __future__ import annotations

from wan_demo.core.settings import Settings

# Calibrated at 40 steps (the official I2V 480P sampling), CFG on: one ratio per transformer call,
# conditional and unconditional interleaved, as published (cond, uncond, cond, uncond, ...).
CALIBRATED_STEPS = 40
WAN21_I2V_480P_RATIOS = (
    1.0, 1.0, 0.98783, 0.98993, 0.97559, 0.97593, 0.98311, 0.98319, 0.98202, 0.98225,
    0.9888, 0.98878, 0.98762, 0.98759, 0.98957, 0.98971, 0.99052, 0.99043, 0.99383, 0.99384,
    0.98857, 0.9886, 0.99065, 0.99068, 0.98845, 0.98847, 0.99057, 0.99057, 0.98957, 0.98961,
    0.98601, 0.9861, 0.98823, 0.98823, 0.98756, 0.98759, 0.98808, 0.98814, 0.98721, 0.98724,
    0.98571, 0.98572, 0.98543, 0.98544, 0.98157, 0.98165, 0.98411, 0.98413, 0.97952, 0.97953,
    0.98149, 0.9815, 0.9774, 0.97742, 0.97825, 0.97826, 0.97355, 0.97361, 0.97085, 0.97087,
    0.97056, 0.97055, 0.96588, 0.96587, 0.96113, 0.96124, 0.9567, 0.95681, 0.94961, 0.94969,
    0.93973, 0.93988, 0.93217, 0.93224, 0.91878, 0.91896, 0.90955, 0.90954, 0.92617, 0.92616,
)  # fmt: skip
# The authors' defaults (argparse of the file above). Their README runs I2V 480P also at
# threshold 0.24 / K 6 ("E024K6R02": faster, further from the uncached video).
THRESHOLD = 0.12  # accumulated |1 - ratio product| allowed before a step is computed again
MAX_SKIP = 2  # K: at most this many consecutive steps reuse one cached residual
RETENTION = 0.2  # the first 20 % of the steps are always computed (they set the layout and motion)


def cond_ratios() -> list[float]:
    """The conditional branch's 40 ratios, used for both CFG branches: diffusers' hook takes one
    list (each branch keeps its own residual and error under its cache context). The published
    unconditional column differs by at most 0.0021. Checked against the authors' loop
    (tests/test_magcache.py): the same skipped steps for both branches at 40 steps, and for the
    conditional branch at every count from 3 to 100; their unconditional branch, counted on one
    interleaved counter, may start skipping one step earlier (2 * 0.2 * steps rounded down)."""
    return list(WAN21_I2V_480P_RATIOS[0::2])


def check(settings: Settings) -> None:
    """Refuse MagCache settings that cannot work, naming the value and the rule (ValueError)."""
    if not 0 < settings.magcache_threshold <= 1:
        raise ValueError(f"magcache_threshold {settings.magcache_threshold}: must be > 0 and <= 1")
    if settings.magcache_max_skip < 1:
        raise ValueError(f"magcache_max_skip {settings.magcache_max_skip}: must be at least 1")
    if not 0 <= settings.magcache_retention < 1:
        raise ValueError(f"magcache_retention {settings.magcache_retention}: must be >= 0 and < 1")


def config(settings: Settings, steps: int):
    """diffusers' MagCacheConfig for a run of `steps` denoising steps.

    Other step counts than the calibrated 40 use the authors' rule: nearest-neighbour
    interpolation of the ratio list to `steps` entries (index round(i * 39 / (steps - 1))), which
    MagCacheConfig applies itself with the same rule (`hooks.mag_cache.nearest_interp`)."""
    from diffusers import MagCacheConfig

    check(settings)
    if steps < 1:
        raise ValueError(f"steps {steps}: MagCache needs at least one denoising step")
    return MagCacheConfig(
        threshold=settings.magcache_threshold,
        max_skip_steps=settings.magcache_max_skip,
        retention_ratio=settings.magcache_retention,
        num_inference_steps=steps,
        mag_ratios=cond_ratios(),
    )
