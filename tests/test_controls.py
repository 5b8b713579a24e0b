"""The optional controls (core/controls.py): one definition, checked by validate() and plan_run()."""

import pytest
from conftest import ask, make_image

from wan_demo.core.controls import CONTROLS, api_field, check_mode, without_ignored
from wan_demo.core.plan import DEFAULT_NEGATIVE_PROMPT, EngineInfo, plan_run
from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import Settings

FAST = EngineInfo(fast_available=True)
IMAGE = make_image(96, 64)


@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        ({"flow_shift": "3"}, "flow_shift", "must be a number"),
        ({"flow_shift": 0.5}, "flow_shift", "0.5 is out of range 1.0..20.0"),
        ({"flow_shift": True}, "flow_shift", "must be a number"),
        ({"fps": 24.5}, "fps", "must be a whole number"),
        ({"fps": 61}, "fps", "61 is out of range 4..60"),
        ({"fps": [16]}, "fps", "must be a number"),
        ({"steps": 101}, "steps", "101 is out of range 1..100"),
        # issue 27: bounded before any conversion (float() of 2**1024 overflows; JSON allows 10**400)
        ({"steps": 2**1024}, "steps", "an integer of about 309 digits is out of range 1..100"),
        ({"fps": -(10**400)}, "fps", "an integer of about 401 digits is out of range 4..60"),
        ({"fps": 10**5000}, "fps", "an integer of about 5001 digits"),  # too long for Python to print
        ({"guidance": 10**400}, "guidance", "an integer of about 401 digits is out of range 1.0..20.0"),
        ({"flow_shift": float("inf")}, "flow_shift", "must be a finite number, got inf"),
        ({"steps": float("nan")}, "steps", "must be a finite number, got nan"),
        ({"seed": 10**400}, "seed", "an integer of about 401 digits is out of range"),
        ({"guidance": 0.5}, "guidance", "0.5 is out of range 1.0..20.0"),
        ({"negative_prompt": 3}, "negative_prompt", "must be a string"),
        ({"speed_mode": "turbo"}, "speed_mode", "'turbo' is unknown; use one of quality, fast"),
        # explicit fast mode: values it would ignore are refused, not dropped
        ({"speed_mode": "fast", "guidance": 5.0}, "guidance", "5.0 is ignored in fast mode"),
        ({"guidance": 1.0, "negative_prompt": "blur"}, "negative_prompt", "ignored without guidance"),
        # issue 24: NAG is the fast mode's negative guidance; quality mode has CFG
        ({"speed_mode": "quality", "nag_scale": 5.0}, "nag_scale", "5.0 is ignored in quality mode (NAG"),
        ({"speed_mode": "quality", "nag_tau": 2.0}, "nag_tau", "ignored in quality mode"),
        ({"nag_alpha": 1.5}, "nag_alpha", "1.5 is out of range 0.0..1.0"),
        ({"nag_scale": "11"}, "nag_scale", "must be a number"),
        ({"interpolate": 3}, "interpolate", "3 is out of range 1..2"),
        ({"interpolate": 0}, "interpolate", "0 is out of range 1..2"),
        ({"interpolate": 1.5}, "interpolate", "must be a whole number"),
    ],
)
def test_bad_values_name_the_field_and_rule(fields, field, rule):
    with pytest.raises(InvalidRequest) as err:
        ask(IMAGE, "a cat", **fields)
    assert (err.value.field, rule in err.value.rule) == (field, True), str(err.value)


def test_values_reach_the_plan_and_unset_keeps_todays_defaults():
    default = plan_run(ask(IMAGE, "a cat"), Settings(), EngineInfo())
    assert (default.steps, default.guidance, default.shift, default.fps) == (40, 5.0, 3.0, 16)
    chosen = ask(IMAGE, "a cat", steps=8, guidance=3.5, flow_shift=7.0, fps=24, negative_prompt="blur")
    p = plan_run(chosen, Settings(), EngineInfo())
    assert (p.steps, p.guidance, p.shift, p.fps, p.negative_prompt) == (8, 3.5, 7.0, 24, "blur")
    fast = plan_run(ask(IMAGE, "a cat", speed_mode="fast", guidance=1.0, flow_shift=4.0), Settings(), FAST)
    assert (fast.speed_mode, fast.guidance, fast.shift, fast.steps) == ("fast", 1.0, 4.0, 4)
    assert chosen.params()["flow_shift"] == 7.0 and chosen.params()["fps"] == 24


def test_the_server_default_mode_is_checked_by_the_plan():
    """speed_mode unset: validate() cannot know the mode; plan_run() refuses once it does."""
    request = ask(IMAGE, "a cat", guidance=5.0)  # fine for validate()
    assert plan_run(request, Settings(), EngineInfo()).guidance == 5.0  # quality here
    with pytest.raises(InvalidRequest, match="guidance: 5.0 is ignored in fast mode"):
        plan_run(request, Settings(), FAST)  # auto = fast where the LoRA is loaded
    with pytest.raises(InvalidRequest, match="nag_scale: 5.0 is ignored in quality mode"):
        plan_run(ask(IMAGE, "a cat", nag_scale=5.0), Settings(speed_mode="quality"), FAST)


def test_nag_runs_in_fast_mode_with_a_negative_prompt_or_a_nag_field():
    """Fast mode: a negative prompt (or any nag_* field) turns NAG on, unset numbers at the cited
    defaults; without either NAG is off, as before."""
    off = plan_run(ask(IMAGE, "a cat"), Settings(speed_mode="fast"), FAST)
    assert off.nag is None and off.forwards == 4
    on = plan_run(ask(IMAGE, "a cat", negative_prompt="blur"), Settings(speed_mode="fast"), FAST)
    assert (on.nag.scale, on.nag.tau, on.nag.alpha, on.negative_prompt) == (11.0, 2.5, 0.25, "blur")
    tuned = plan_run(ask(IMAGE, "a cat", nag_scale=5.0, nag_alpha=0.5), Settings(speed_mode="fast"), FAST)
    assert (tuned.nag.scale, tuned.nag.tau, tuned.nag.alpha) == (5.0, 2.5, 0.5)
    assert tuned.negative_prompt == DEFAULT_NEGATIVE_PROMPT and tuned.forwards == 4  # no extra forward
    quality = plan_run(ask(IMAGE, "a cat", negative_prompt="blur"), Settings(), EngineInfo())
    assert quality.nag is None and quality.cfg  # quality: the negative prompt goes through CFG


def test_interpolation_doubles_frames_and_fps_at_the_same_duration():
    plain = plan_run(ask(IMAGE, "a cat"), Settings(), EngineInfo())
    smooth = plan_run(ask(IMAGE, "a cat", interpolate=2), Settings(), EngineInfo())
    assert (plain.out_frames, plain.out_fps) == (81, 16)
    assert (smooth.out_frames, smooth.out_fps, smooth.forwards) == (161, 32, plain.forwards)
    assert abs(smooth.out_frames / smooth.out_fps - plain.out_frames / plain.out_fps) <= 1 / 32
    ten = plan_run(ask(IMAGE, "a cat", interpolate=2, video_length_s=10), Settings(), EngineInfo())
    assert (ten.num_frames, ten.out_frames) == (161, 321)


def test_rest_names_come_from_the_same_table():
    assert {c.api_name for c in CONTROLS.values()} == {
        "negative_prompt", "speed_mode", "num_inference_steps", "guidance_scale", "flow_shift", "fps",
        "nag_scale", "nag_tau", "nag_alpha", "interpolate",
    }  # fmt: skip
    assert (api_field("steps"), api_field("guidance"), api_field("seed")) == (
        "num_inference_steps", "guidance_scale", "seed",
    )  # fmt: skip


def test_a_record_of_a_run_restores_without_what_its_mode_ignored():
    """Restore (web/restore.py) reads what ran, incl. runs made before these refusals existed."""
    fast = without_ignored({"speed_mode": "fast", "guidance": 5.0, "negative_prompt": "blur"})
    assert fast == {"speed_mode": "fast", "guidance": None, "negative_prompt": "blur"}  # NAG uses it
    quality = without_ignored({"speed_mode": "quality", "nag_scale": 5.0, "guidance": 5.0})
    assert quality["nag_scale"] is None
    no_cfg = without_ignored({"speed_mode": "quality", "guidance": 1.0, "negative_prompt": "blur"})
    assert no_cfg["negative_prompt"] is None and no_cfg["guidance"] == 1.0
    for values in (fast, no_cfg):
        check_mode(values, values["speed_mode"], values["guidance"])  # accepted now
