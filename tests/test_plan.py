"""plan_run() and the pure maths under it: sizes, frames, steps, forwards, seconds. No model."""

import pytest
from conftest import ask, make_image

from wan_demo.core.plan import (
    DEFAULT_COST,
    DEFAULT_NEGATIVE_PROMPT,
    CostModel,
    EngineInfo,
    calibrate,
    draw_seed,
    eta_s,
    frames_for,
    plan_run,
    resolve_mode,
)
from wan_demo.core.request import GenerationResult, InvalidRequest, ParentClip
from wan_demo.core.settings import MAX_AREA, SEED_MAX, Settings

FAST = EngineInfo(fast_available=True)


def plan(size=(1920, 1080), settings=Settings(), engine=EngineInfo(), **fields):  # noqa: B008
    request = ask(make_image(*size), "a cat", **fields)
    return plan_run(request, settings, engine)


def test_frame_counts_per_length():
    assert frames_for(5) == 81
    assert frames_for(10) == 161
    with pytest.raises(ValueError):
        frames_for(7)


def test_seed_and_eta_maths():
    assert draw_seed(42) == 42
    drawn = {draw_seed(-1) for _ in range(20)}
    assert all(0 <= s <= SEED_MAX for s in drawn) and len(drawn) > 1
    assert eta_s(0, 10, 0.0) is None
    assert eta_s(2, 10, 4.0) == pytest.approx(16.0)
    assert eta_s(10, 10, 20.0) == 0.0


def test_quality_plan_for_a_10_s_16_9_clip():
    p = plan(video_length_s=10)
    assert (p.width, p.height, p.segments, p.frames_per_segment, p.num_frames) == (832, 464, 2, 81, 161)
    assert (p.steps, p.guidance, p.shift, p.speed_mode, p.fps) == (40, 5.0, 3.0, "quality", 16)
    assert p.cfg and p.forwards == 40 * 2 * 2 and p.total_steps == 80
    assert p.negative_prompt == DEFAULT_NEGATIVE_PROMPT


def test_fast_plan_and_request_overrides():
    p = plan(engine=FAST)  # auto picks fast when the LoRA is loaded
    assert (p.speed_mode, p.steps, p.guidance, p.shift, p.forwards) == ("fast", 4, 1.0, 5.0, 4)
    q = plan(engine=FAST, speed_mode="quality", steps=12, guidance=3.5, negative_prompt="blur")
    assert (q.speed_mode, q.steps, q.guidance, q.forwards, q.negative_prompt) == (
        "quality",
        12,
        3.5,
        24,
        "blur",
    )
    s = plan(settings=Settings(steps=7, shift=4.0))
    assert (s.steps, s.shift) == (7, 4.0)


def test_fast_without_lora_is_an_input_error():
    with pytest.raises(InvalidRequest, match="'fast' needs the step-distilled LoRA"):
        plan(speed_mode="fast")
    with pytest.raises(InvalidRequest, match="speed_mode"):
        resolve_mode(Settings(speed_mode="fast"), None, fast_available=False)


def test_size_follows_the_engine_budget():
    assert (plan(size=(96, 64), engine=EngineInfo(max_area=64 * 64)).width, 64) == (64, 64)
    p = plan(size=(96, 64), engine=EngineInfo(max_area=64 * 64))
    assert (p.width, p.height) == (64, 48)


def test_estimated_seconds_scale_with_forwards_and_pixels():
    cost = CostModel(forward_s=2.0, decode_s=4.0, setup_s=10.0)
    full = plan(size=(832, 480), engine=EngineInfo(cost=cost))
    assert full.est_seconds == pytest.approx(10 + 80 * 2.0 + 4.0)
    small = plan(size=(416, 240), engine=EngineInfo(max_area=MAX_AREA // 4, cost=cost))
    assert small.est_seconds == pytest.approx(10 + (80 * 2.0 + 4.0) / 4)


def test_calibrate_blends_the_measured_forward_time():
    result = GenerationResult(
        id="x", video_path=None, thumbnail_path=None, metadata_path=None, seed_used=1, final_prompt="p",
        prompt_info={}, width=832, height=480, num_frames=81, fps=16, duration_s=5.06, model="m",
        is_tiny_model=False, timings_s={"pipeline": 88.0, "encode": 2.0},
        settings={"forwards": 80, "segments": 1},
    )  # fmt: skip
    cost = calibrate(DEFAULT_COST, result, weight=1.0)
    assert cost.forward_s == pytest.approx((88.0 - DEFAULT_COST.decode_s) / 80)
    assert cost.setup_s == pytest.approx(2.0) and cost.decode_s == DEFAULT_COST.decode_s
    assert calibrate(DEFAULT_COST, result, weight=0.5).forward_s == pytest.approx(
        (DEFAULT_COST.forward_s + cost.forward_s) / 2
    )


def test_an_extension_keeps_its_parents_size_and_adds_80_frames_per_segment():
    parent = ParentClip("p.mp4", num_frames=81, width=832, height=480, fps=16, source="result")
    five = plan(size=(832, 480), parent=parent)
    assert (five.width, five.height, five.parent_frames, five.num_frames) == (832, 480, 81, 161)
    ten = plan(size=(832, 480), parent=parent, video_length_s=10)
    assert (ten.segments, ten.num_frames, ten.forwards) == (2, 81 + 160, five.forwards * 2)
    with pytest.raises(InvalidRequest, match="video: is 24 fps; this request continues 16 fps videos"):
        plan(size=(832, 480), parent=ParentClip("p.mp4", 81, 832, 480, 24, "upload"))
    small = EngineInfo(max_area=64 * 64)
    with pytest.raises(InvalidRequest, match="larger than this model's 4096 pixels"):
        plan(size=(832, 480), parent=parent, engine=small)
