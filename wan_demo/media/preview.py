"""Live preview: the denoiser's current clean-image estimate as a small looping animation.

No VAE decode. Wan2.1's 16 latent channels map to RGB through a 16x3 linear projection plus a bias
per colour, published in ComfyUI's comfy/latent_formats.py (class Wan21: `latent_rgb_factors`,
`latent_rgb_factors_bias`; the same values are copied by other Wan tools). ComfyUI's
Latent2RGBPreviewer applies it to the sampler's own latents, which are normalised with the VAE's
latents_mean / latents_std (Wan21.process_in). diffusers' Wan pipelines sample in that same
normalised space ((z - mean) / std, undone only before the VAE decode), so the projection applies
to them as they are; the output is in [-1, 1].

One latent frame stands for 4 video frames (the VAE's temporal factor), so the animation plays at
fps / 4 and lasts as long as the segment. Pure numpy + Pillow: the torch side (taking the latents
off the device) lives in model/pipeline.py.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

# ComfyUI comfy/latent_formats.py, class Wan21 (rows: latent channels 0..15; columns: R, G, B)
WAN21_LATENT_RGB_FACTORS = np.array(
    [
        [-0.1299, -0.1692, 0.2932],
        [0.0671, 0.0406, 0.0442],
        [0.3568, 0.2548, 0.1747],
        [0.0372, 0.2344, 0.1420],
        [0.0313, 0.0189, -0.0328],
        [0.0296, -0.0956, -0.0665],
        [-0.3477, -0.4059, -0.2925],
        [0.0166, 0.1902, 0.1975],
        [-0.0412, 0.0267, -0.1364],
        [-0.1293, 0.0740, 0.1636],
        [0.0680, 0.3019, 0.1128],
        [0.0032, 0.0581, 0.0639],
        [-0.1251, 0.0927, 0.1699],
        [0.0060, -0.0633, 0.0005],
        [0.3477, 0.2275, 0.2950],
        [0.1984, 0.0913, 0.1861],
    ],
    dtype=np.float32,
)
WAN21_LATENT_RGB_BIAS = np.array([-0.1835, -0.0868, -0.3360], dtype=np.float32)
LATENT_CHANNELS = 16
TEMPORAL_FACTOR = 4  # video frames per latent frame (after the first)
MAX_SIDE = 256  # px: the animation's longer side (the latent grid is 1/8 of the video's)
WEBP_QUALITY = 70  # 0-100; a preview, not the result
SUFFIX = ".preview.webp"  # a job's preview file: <output folder>/<request id>.preview.webp


def latents_to_rgb(latents: np.ndarray) -> np.ndarray:
    """Normalised latents (16, F, H, W) -> RGB frames (F, H, W, 3) uint8, by the Wan2.1 projection."""
    if latents.ndim != 4 or latents.shape[0] != LATENT_CHANNELS:
        raise ValueError(f"expected latents of shape (16, F, H, W), got {latents.shape}")
    rgb = np.tensordot(latents.astype(np.float32, copy=False), WAN21_LATENT_RGB_FACTORS, axes=([0], [0]))
    rgb += WAN21_LATENT_RGB_BIAS
    # [-1, 1] -> [0, 255], rounded (ComfyUI's preview_to_image scaling)
    rgb += 1.0
    rgb *= 127.5
    np.clip(rgb, 0.0, 255.0, out=rgb)
    return np.rint(rgb).astype(np.uint8)


def preview_size(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_preview(frames: np.ndarray, fps: float, max_side: int = MAX_SIDE) -> bytes:
    """RGB frames (F, h, w, 3) uint8 -> a looping animated WEBP, its longer side `max_side` px,
    one latent frame per 1000 / fps ms (fps = the video's fps / TEMPORAL_FACTOR)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"expected frames of shape (F, H, W, 3), got {frames.shape}")
    size = preview_size(frames.shape[2], frames.shape[1], max_side)
    images = [Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="WEBP", save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)),
        loop=0, quality=WEBP_QUALITY, method=0,  # method 0: fastest encoder, a preview is short-lived
    )  # fmt: skip
    return buffer.getvalue()


def write_preview(frames: np.ndarray, path: Path, fps: float) -> Path:
    """Encode and replace `path` atomically (a reader sees the old or the new file, never half)."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(encode_preview(frames, fps))
    os.replace(tmp, path)
    return path
