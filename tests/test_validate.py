"""validate(): one error type whose message names the field, the value and the rule."""

import pytest

from wan_demo.core.request import GenerationRequest, InvalidRequest
from wan_demo.core.settings import MAX_PROMPT_CHARS, SEED_MAX
from wan_demo.core.validate import validate


def _request(default_image, **changes) -> GenerationRequest:
    return GenerationRequest(**{"image": default_image, "prompt": "a cat walks", **changes})


def test_valid_request_is_normalised(image):
    out = validate(_request(image, prompt="  a cat walks  ", negative_prompt="  ", video_length_s="10"))
    assert out.prompt == "a cat walks"
    assert out.negative_prompt is None  # blank means "use the default"
    assert out.video_length_s == 10
    assert out.image.mode == "RGB"


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"prompt": ""}, "prompt", "must not be empty"),
        ({"prompt": "   "}, "prompt", "must not be empty"),
        ({"prompt": 5}, "prompt", "must be a string"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt", f"the limit is {MAX_PROMPT_CHARS}"),
        ({"seed": -2}, "seed", "-2 is out of range"),
        ({"seed": SEED_MAX + 1}, "seed", f"{SEED_MAX + 1} is out of range"),
        ({"seed": "7"}, "seed", "must be an integer"),
        ({"seed": True}, "seed", "must be an integer"),
        ({"video_length_s": 7}, "video_length", "7 is not allowed; use 5 or 10"),
        ({"video_length_s": True}, "video_length", "not allowed"),
        ({"steps": 0}, "steps", "out of range"),
        ({"steps": 2.5}, "steps", "whole number"),
        ({"guidance": "high"}, "guidance", "must be a number"),
        ({"speed_mode": "turbo"}, "speed_mode", "'turbo' is unknown"),
        ({"image": None}, "image", "is required"),
    ],
)
def test_bad_input_names_field_value_and_rule(image, changes, field, rule):
    with pytest.raises(InvalidRequest) as err:
        validate(_request(image, **changes))
    assert err.value.field == field
    assert rule in str(err.value)
    assert str(err.value).startswith(f"{field}: ")


def test_seed_bounds_are_inclusive(image):
    assert validate(_request(image, seed=-1)).seed == -1
    assert validate(_request(image, seed=SEED_MAX)).seed == SEED_MAX
    assert validate(_request(image, seed=3.0)).seed == 3
