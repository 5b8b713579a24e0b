"""Live preview: the latent->RGB projection, the animated WEBP, the clean-latent estimate taken from
the scheduler, and previews reported by generate() during a tiny-model run."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ask
from PIL import Image

from wan_demo.core.plan import plan_run
from wan_demo.generate import StepReporter, generate
from wan_demo.media.preview import (
    WAN21_LATENT_RGB_BIAS,
    WAN21_LATENT_RGB_FACTORS,
    encode_preview,
    latents_to_rgb,
)
from wan_demo.model.pipeline import clean_latents
from wan_demo.model.tiny import SCHEDULER_CONFIG


def test_projection_is_the_wan21_linear_map_into_pixels():
    assert WAN21_LATENT_RGB_FACTORS.shape == (16, 3) and WAN21_LATENT_RGB_BIAS.shape == (3,)
    zeros = latents_to_rgb(np.zeros((16, 2, 3, 5), np.float32))
    assert zeros.shape == (2, 3, 5, 3) and zeros.dtype == np.uint8
    assert zeros[0, 0, 0].tolist() == [104, 116, 85]  # (bias + 1) * 127.5, rounded
    one = np.zeros((16, 1, 1, 1), np.float32)
    one[2] = 1.0  # channel 2 alone: its row of factors, plus the bias
    expected = np.rint((WAN21_LATENT_RGB_FACTORS[2] + WAN21_LATENT_RGB_BIAS + 1) * 127.5)
    assert latents_to_rgb(one)[0, 0, 0].tolist() == expected.tolist()
    assert latents_to_rgb(np.full((16, 1, 2, 2), 50.0, np.float32)).max() == 255  # clipped, no wrap
    with pytest.raises(ValueError, match="16, F, H, W"):
        latents_to_rgb(np.zeros((4, 1, 2, 2), np.float32))


def test_preview_is_a_looping_animated_webp_at_latent_pace():
    frames = np.stack([np.full((6, 8, 3), 20 * i, np.uint8) for i in range(5)])
    data = encode_preview(frames, fps=4.0)  # 16 fps video / 4 video frames per latent frame
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP" and image.is_animated and image.n_frames == 5
        image.load()  # Pillow reads frame timing on load
        assert image.size == (256, 192) and image.info["loop"] == 0 and image.info["duration"] == 250


def test_clean_latents_is_x_t_minus_sigma_v_from_the_scheduler():
    """x0 = x_t - sigma_t * v with the scheduler's own sigma for the step just taken."""
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(**SCHEDULER_CONFIG)
    scheduler.set_timesteps(4)
    pipe = SimpleNamespace(scheduler=scheduler)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 16, 2, 3, 4, generator=generator)
    for i, t in enumerate(scheduler.timesteps):
        velocity = torch.randn(sample.shape, generator=generator)
        sigma = scheduler.sigmas[i]
        expected = (sample - sigma * velocity)[0].numpy()
        sample = scheduler.step(velocity, t, sample, return_dict=False)[0]
        np.testing.assert_allclose(clean_latents(pipe, sample), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clean_latents(pipe, sample), sample[0].numpy())  # last step: x0 is the result


def test_generate_reports_a_preview_while_denoising(engine, settings, image):
    reports = []
    result = generate(ask(image, "a cat walks", seed=2), engine, settings.replace(preview_every_s=1e-6),
                      reports.append)  # fmt: skip
    shown = [p for p in reports if p.preview is not None]
    assert [p.step for p in shown] == [1, 2] and all(p.stage == "denoise" for p in shown)
    # 81 frames -> 21 latent frames; 64x48 -> an 8x6 latent grid
    assert shown[0].preview.shape == (21, 6, 8, 3) and shown[0].preview.dtype == np.uint8
    assert not np.array_equal(shown[0].preview, shown[1].preview)  # the picture changes as it forms
    assert "preview" not in shown[0].as_dict()  # pixels never go into the job row
    assert result.timings_s["preview"] >= 0 and result.num_frames == 81


@pytest.mark.parametrize("every, shown", [(0.0, [None, None]), (3600.0, ["frames", None])])
def test_previews_are_throttled_and_zero_turns_them_off(engine, settings, image, every, shown):
    reports = []
    plan = plan_run(ask(image, "x"), settings, engine.plan_info())
    steps = StepReporter(reports.append, None, plan, preview_every_s=every)
    for done in (1, 2):
        steps.latents(lambda: np.zeros((16, 21, 6, 8), np.float32))  # what the pipeline hands over
        steps(done)
    assert ["frames" if p.preview is not None else None for p in reports] == shown
