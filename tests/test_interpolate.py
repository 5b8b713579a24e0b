"""Frame interpolation x2 (media/interpolate.py, ffmpeg minterpolate): frame counts, the generated
frames kept exactly, the seam of an extension, the clip's fps and duration, what the metadata says,
and a thumbnail from the generated frames."""

from __future__ import annotations

import json

import imageio_ffmpeg
import numpy as np
import pytest
from conftest import ask, make_image

from wan_demo.core.settings import Settings
from wan_demo.generate import generate
from wan_demo.media.clip import parent_from_result
from wan_demo.media.interpolate import METHOD, InterpolationFailed, interpolate
from wan_demo.media.video import count_frames, read_mp4_metadata


def moving(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    """A pattern sliding 2 px per frame, float in [0, 1] like the pipeline's output."""
    yy, xx = np.mgrid[0:h, 0:w]
    return [
        np.stack([np.sin((xx + 2 * i) / 5), np.cos((yy + i) / 6), xx / w], -1) * 0.45 + 0.5 for i in range(n)
    ]


def test_81_frames_become_161_with_the_originals_kept_exactly():
    frames = moving(81)
    out = interpolate(frames)
    assert len(out) == 161 and all(f.dtype == np.uint8 and f.shape == (48, 64, 3) for f in out)
    originals = [np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8) for f in frames]
    assert all(np.array_equal(out[2 * i], originals[i]) for i in range(81))
    # the in-between frames lie between their neighbours (motion-compensated, not a copy of either)
    middle = out[81].astype(float)
    assert not np.array_equal(out[81], out[80]) and not np.array_equal(out[81], out[82])
    assert np.abs(middle - (out[80].astype(float) + out[82]) / 2).mean() < 12


def test_an_extension_seam_is_interpolated_from_the_anchor():
    frames = moving(9)
    out = interpolate(frames[1:], anchor=frames[0])
    assert len(out) == 16  # 2 per new frame: the in-between of the seam, then the frame
    assert np.array_equal(out[1], np.clip(frames[1] * 255 + 0.5, 0, 255).astype(np.uint8))


def test_a_hung_or_failing_ffmpeg_fails_clearly():
    with pytest.raises(InterpolationFailed, match="minterpolate gave 0 of 80 frames"):
        interpolate(moving(81), timeout_s=0.0)


@pytest.fixture(scope="module")
def clips(engine, tmp_path_factory):
    settings = Settings(model="tiny", device="cpu", steps=2, prompt_extender="off",
                        output_dir=tmp_path_factory.mktemp("interp"))  # fmt: skip
    plain = generate(ask(make_image(), "a cat", seed=11), engine, settings)
    smooth = generate(ask(make_image(), "a cat", seed=11, interpolate=2), engine, settings)
    return settings, plain, smooth


def test_an_interpolated_5_s_clip_has_161_frames_at_32_fps_and_the_same_duration(clips):
    _, plain, smooth = clips
    assert count_frames(smooth.video_path)[0] == 161 and count_frames(plain.video_path)[0] == 81
    reader = imageio_ffmpeg.read_frames(str(smooth.video_path))
    meta = next(reader)
    reader.close()
    assert meta["fps"] == 32.0 and (smooth.num_frames, smooth.fps) == (161, 32)
    assert abs(smooth.num_frames / smooth.fps - plain.num_frames / plain.fps) <= 1 / 32  # within one frame
    tag = read_mp4_metadata(smooth.video_path)
    assert tag["settings"]["interpolation"] == {"factor": 2, "method": METHOD, "fps": 32}
    assert tag["settings"]["sampled_fps"] == 16 and plain.settings["interpolation"] is None
    assert json.loads(smooth.metadata_path.read_text())["num_frames"] == 161
    assert "interpolate" in smooth.timings_s and "interpolate" not in plain.timings_s


def test_the_thumbnail_is_the_generated_first_frame(clips):
    _, plain, smooth = clips
    assert smooth.thumbnail_path.read_bytes() == plain.thumbnail_path.read_bytes()


def test_extending_an_interpolated_clip_keeps_32_fps(clips, engine):
    settings, _, smooth = clips
    parent = parent_from_result(smooth.video_path, json.loads(smooth.metadata_path.read_text()), "p")
    assert parent.fps == 32
    longer = generate(ask(make_image(), "next", parent=parent, interpolate=2), engine, settings)
    assert count_frames(longer.video_path)[0] == 161 + 160 and longer.fps == 32
    with pytest.raises(ValueError, match="is 32 fps; this request continues 16 fps videos"):
        generate(ask(make_image(), "next", parent=parent), engine, settings)  # not interpolated
