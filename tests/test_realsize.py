"""Slow tier: the tiny model at the real 480P output size (minutes on 2 cores)."""

import pytest
from conftest import ask
from PIL import Image

from wan_demo.core.settings import MAX_AREA
from wan_demo.generate import generate
from wan_demo.media.video import count_frames, read_mp4_metadata
from wan_demo.model.engine import load_engine


@pytest.mark.slow
def test_five_second_clip_at_832x480(settings):
    real_size = settings.replace(tiny_max_area=MAX_AREA)
    engine = load_engine(real_size)
    image = Image.new("RGB", (1920, 1080), (30, 90, 160))  # 16:9 photo -> 832x464
    result = generate(ask(image, "the sea at dusk", seed=11), engine, real_size)
    assert count_frames(result.video_path) == (81, 832, 464)
    assert read_mp4_metadata(result.video_path)["seed"] == 11
    assert result.video_path.stat().st_size > 10_000
