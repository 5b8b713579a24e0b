"""Colour match at the seam of chained segments.

A segment chained on the last frame of the one before drifts in colour as it goes (brightness and
saturation creep, each segment a little further from the first). Every frame of the new segment
gets, per RGB channel, the mean and standard deviation of the reference: the last TAIL_FRAMES of
the previous segment (half a second), the picture the new segment continues. A statistics transfer
in the manner of Reinhard et al. (2001), per channel in RGB; `strength` blends it with the frame
as generated (0 = off, 1 = full). Pure numpy; frames are float in [0, 1] or uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TAIL_FRAMES = 8  # reference: the previous segment's last frames (0.5 s at 16 fps)
MAX_GAIN = 2.0  # bound on the std ratio, both ways: a near-flat frame must not blow up its noise
EPS = 1e-6


def as_float(frame: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] (uint8 pixels are scaled; floats are returned as they are)."""
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) / 255.0
    return frame.astype(np.float32, copy=False)


def colour_stats(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over all pixels of `frames`, in [0, 1] units."""
    if not len(frames):
        raise ValueError("colour statistics need at least one frame")
    pixels = np.concatenate([as_float(f).reshape(-1, 3) for f in frames])
    return pixels.mean(axis=0), pixels.std(axis=0)


def match_colours(
    frames: Sequence[np.ndarray], reference: Sequence[np.ndarray], strength: float = 1.0
) -> list[np.ndarray]:
    """`frames` with each frame's per-channel mean/std moved to the reference's, float32 in [0, 1]."""
    strength = min(max(float(strength), 0.0), 1.0)
    if strength == 0.0:
        return [as_float(f) for f in frames]
    ref_mean, ref_std = colour_stats(reference)
    out = []
    for frame in frames:
        pixels = as_float(frame)
        flat = pixels.reshape(-1, 3)
        mean, std = flat.mean(axis=0), flat.std(axis=0)
        gain = np.clip(ref_std / np.maximum(std, EPS), 1.0 / MAX_GAIN, MAX_GAIN).astype(np.float32)
        matched = (pixels - mean.astype(np.float32)) * gain + ref_mean.astype(np.float32)
        if strength < 1.0:
            matched = pixels + strength * (matched - pixels)
        np.clip(matched, 0.0, 1.0, out=matched)
        out.append(matched)
    return out


def seam_difference(frames: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """How far `frames` drift from the reference in colour: per frame, the mean over channels of
    |mean difference| + |std difference|, averaged over the frames ([0, 1] units; 0 = none)."""
    ref_mean, ref_std = colour_stats(reference)
    per_frame = []
    for frame in frames:
        mean, std = colour_stats([frame])
        per_frame.append(np.mean(np.abs(mean - ref_mean) + np.abs(std - ref_std)))
    return float(np.mean(per_frame))
