"""Seam colour match on synthetic frames: a segment that drifts in brightness and contrast away from
the frames before it is brought back to their colour statistics (numbers asserted)."""

from __future__ import annotations

import numpy as np

from wan_demo.media.colour import as_float, colour_stats, match_colours, seam_difference


def scene(seed: int = 0) -> np.ndarray:
    """A 48x64 picture with structure (a gradient and a square) and a little noise, float in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:48, 0:64] / 64.0
    picture = np.stack([0.3 + 0.4 * x, 0.2 + 0.5 * y, 0.5 - 0.2 * x], axis=-1)
    picture[10:30, 20:40] += 0.2
    return np.clip(picture + rng.normal(0, 0.02, picture.shape), 0, 1).astype(np.float32)


def drifted(frames: int = 80) -> list[np.ndarray]:
    """The same scene drifting as chained segments do: brighter, more saturated, warmer, frame by frame."""
    base, out = scene(1), []
    for i in range(1, frames + 1):
        t = i / frames
        gain = np.array([1 + 0.25 * t, 1 + 0.15 * t, 1 - 0.1 * t], np.float32)
        shift = np.array([0.08, 0.04, -0.03], np.float32) * t
        out.append(np.clip((base - 0.5) * gain + 0.5 + shift, 0, 1).astype(np.float32))
    return out


def test_match_brings_a_drifting_segment_back_to_the_seam_colours():
    reference = [scene(0) for _ in range(8)]  # the last 8 frames before the seam (0.5 s)
    new = drifted()
    before = seam_difference(new, reference)
    after = seam_difference(match_colours(new, reference), reference)
    assert before > 0.03  # the drift is real: 0.034 on average over the 80 frames (~9 grey levels)
    assert after < 0.001  # matched: mean and std per channel within a quarter of a grey level
    last_before = seam_difference(new[-1:], reference)
    last_after = seam_difference(match_colours(new[-1:], reference), reference)
    assert last_before > 0.06 and last_after < 0.001  # the end of the segment, where drift is worst


def test_strength_blends_and_zero_is_off():
    reference, new = [scene(0)], drifted(10)
    assert all(np.array_equal(a, b) for a, b in zip(match_colours(new, reference, 0.0), new, strict=True))
    half = seam_difference(match_colours(new, reference, 0.5), reference)
    full = seam_difference(match_colours(new, reference, 1.0), reference)
    assert full < half < seam_difference(new, reference)


def test_flat_frames_and_uint8_inputs_are_safe():
    flat = [np.full((8, 8, 3), 0.5, np.float32)]  # zero variance: the gain is bounded, not infinite
    out = match_colours(flat, [scene(0)])[0]
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    pixels = (scene(0) * 255).round().astype(np.uint8)
    mean_u8, _ = colour_stats([pixels])
    mean_f, _ = colour_stats([as_float(pixels)])
    np.testing.assert_allclose(mean_u8, mean_f)  # uint8 frames are read in [0, 1] units too
