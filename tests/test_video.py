"""MP4 / thumbnail / sidecar writing, without a model."""

import numpy as np
import pytest
from PIL import Image

from wan_demo.media.video import (
    count_frames,
    read_mp4_metadata,
    to_uint8,
    write_mp4,
    write_thumbnail,
)


def _frames(n=9, h=48, w=64):
    rng = np.random.default_rng(0)
    return (rng.random((n, h, w, 3)) * 255).astype(np.uint8)


def test_mp4_is_h264_yuv420p_with_metadata(tmp_path):
    meta = {"prompt": 'a "cat" = 1; #2 \\ back\nslash', "final_prompt": "一只猫在走路", "seed": 5}
    path = write_mp4(_frames(), tmp_path / "a.mp4", fps=16, metadata=meta)
    assert count_frames(path) == (9, 64, 48)
    assert read_mp4_metadata(path) == meta
    assert not list(tmp_path.glob("*.part"))  # written atomically
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    info = next(reader)
    reader.close()
    assert info["codec"] == "h264" and "yuv420p" in info["pix_fmt"] and info["fps"] == 16


def test_float_frames_are_rounded_per_frame(tmp_path):
    floats = np.array([[[[0.0, 0.5, 1.0]]], [[[1.2, -0.1, 0.999]]]], dtype=np.float32)
    assert to_uint8(floats[0]).tolist() == [[[0, 128, 255]]]  # rounded, not truncated (127)
    assert to_uint8(floats[1]).tolist() == [[[255, 0, 255]]]  # clipped into range
    path = write_mp4(list(_frames().astype(np.float32) / 255.0), tmp_path / "f.mp4", 16, {})
    assert count_frames(path) == (9, 64, 48)


def test_mp4_rejects_wrong_shapes(tmp_path):
    with pytest.raises(ValueError, match="expected a sequence of \\(H, W, 3\\) frames"):
        write_mp4([np.zeros((4, 4), np.uint8)], tmp_path / "b.mp4", 16, {})
    with pytest.raises(ValueError, match="got 0 of nothing"):
        write_mp4([], tmp_path / "b.mp4", 16, {})


def test_thumbnail_is_the_first_frame_as_jpeg(tmp_path):
    frames = _frames()
    path = write_thumbnail(frames[0], tmp_path / "t.jpg")
    with Image.open(path) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (64, 48)
