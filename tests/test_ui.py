"""UI wiring without a server: examples data, widget values -> request, validator verdicts."""

from __future__ import annotations

import json

import pytest
from conftest import make_image
from PIL import Image

from wan_demo.core.request import InvalidRequest
from wan_demo.core.validate import validate
from wan_demo.web.handlers import INPUT_FIELDS, check_inputs, to_request
from wan_demo.web.ui import EXAMPLES_DIR, load_examples

EXAMPLE_SIZES = {(832, 480), (480, 832), (624, 624)}  # the model's 480P buckets


def test_examples_are_small_480p_images_with_prompts():
    items = json.loads((EXAMPLES_DIR / "examples.json").read_text())
    assert 4 <= len(items) <= 6
    for item in items:
        path = EXAMPLES_DIR / item["image"]
        assert path.stat().st_size < 60_000
        assert Image.open(path).size in EXAMPLE_SIZES
        assert item["prompt"].strip() and item["length_s"] in (5, 10)
    rows = load_examples()
    assert len(rows) == len(items) and all(len(row) == 4 for row in rows)


@pytest.fixture
def picture(tmp_path) -> str:
    path = tmp_path / "in.png"
    make_image(96, 64).save(path)
    return str(path)


def values(picture, **changes):
    base = dict(
        image=picture, prompt="a cat", prompt_extend=False, seed=7.0, video_length="10",
        negative_prompt="", steps=0, guidance=0, speed_mode="auto", prompt_2="",
        last_image=None, nag_scale=0, nag_tau=0, nag_alpha=0, interpolate=False,
    )  # fmt: skip
    base.update(changes)
    return [base[name] for name in INPUT_FIELDS]


def test_widget_values_become_a_request(picture):
    request, data = to_request(*values(picture, steps=12, guidance=2.5, speed_mode="quality"))
    assert data[:4] == b"\x89PNG"  # the upload's bytes, kept as the stored input
    assert request.image.size == (96, 64)
    assert (request.prompt, request.seed, request.video_length_s) == ("a cat", 7.0, "10")
    assert (request.steps, request.guidance, request.speed_mode) == (12, 2.5, "quality")
    assert request.negative_prompt is None  # empty box = the default negative prompt


def test_zero_and_auto_mean_defaults(picture):
    request, _ = to_request(*values(picture))
    assert (request.steps, request.guidance, request.speed_mode, request.prompt_2) == (None, None, None, None)


def test_second_prompt_is_passed_and_checked(picture):
    request, _ = to_request(*values(picture, prompt_2="then it jumps"))
    assert request.prompt_2 == "then it jumps"
    verdicts = check_inputs(*values(picture, prompt_2="then it jumps", video_length="5"))
    assert "use it with video_length 10" in verdicts[INPUT_FIELDS.index("prompt_2")]["message"]


def test_missing_image_is_an_invalid_request(picture):
    with pytest.raises(InvalidRequest, match="image: is required"):
        to_request(*values(picture, image=None))


@pytest.mark.parametrize(
    "changes, field, words",
    [
        ({"image": None}, "image", "is required"),
        ({"prompt": ""}, "prompt", "must not be empty"),
        ({"seed": -2}, "seed", "out of range"),
        ({"video_length": "7"}, "video_length", "not allowed"),
        # the speed mode's conflicts, from the same table as REST's (core/controls.py)
        ({"speed_mode": "fast", "guidance": 5}, "guidance", "ignored in fast mode"),
        ({"speed_mode": "quality", "nag_scale": 5}, "nag_scale", "ignored in quality mode"),
        ({"guidance": 0.5}, "guidance", "out of range 1.0..20.0"),
        # issue 27: widget numbers reach the bound check as given (no float() of 2**1024 or inf first)
        ({"steps": 2**1024}, "steps", "an integer of about 309 digits is out of range 1..100"),
        ({"guidance": float("nan")}, "guidance", "must be a finite number"),
        ({"nag_tau": float("inf")}, "nag_tau", "must be a finite number"),
        ({"nag_scale": 10**400}, "nag_scale", "an integer of about 401 digits is out of range"),
    ],
)
def test_validator_flags_only_the_bad_field(picture, changes, field, words):
    verdicts = check_inputs(*values(picture, **changes))
    bad = [name for name, v in zip(INPUT_FIELDS, verdicts, strict=True) if not v["is_valid"]]
    assert bad == [field]
    assert words in verdicts[INPUT_FIELDS.index(field)]["message"]


def test_validator_rejects_a_gif(tmp_path, picture):
    gif = tmp_path / "a.gif"
    make_image(64, 64).save(gif, format="GIF")
    verdicts = check_inputs(*values(picture, image=str(gif)))
    assert "GIF is not allowed" in verdicts[0]["message"]


def test_validator_accepts_good_input(picture):
    assert all(v["is_valid"] for v in check_inputs(*values(picture)))


def test_issue_24_widgets_become_request_fields(picture, tmp_path):
    """End frame (an upload), NAG sliders (0 = unset) and the interpolation checkbox (= factor 2)."""
    end = tmp_path / "end.png"
    make_image(96, 64, seed=4).save(end)
    request, _ = to_request(
        *values(picture, last_image=str(end), nag_scale=5, nag_alpha=0.5, interpolate=True)
    )
    assert request.last_image.size == (96, 64)
    assert (request.nag_scale, request.nag_tau, request.nag_alpha, request.interpolate) == (5.0, None, 0.5, 2)
    plain, _ = to_request(*values(picture))
    assert (plain.last_image, plain.nag_scale, plain.interpolate) == (None, None, None)
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    verdict = check_inputs(*values(picture, last_image=str(notes)))[INPUT_FIELDS.index("last_image")]
    assert not verdict["is_valid"] and "not a readable JPEG, PNG or WEBP" in verdict["message"]
    tall = tmp_path / "tall.png"
    make_image(64, 96).save(tall)
    with pytest.raises(InvalidRequest, match="last_image: 64x96 .* must have the input image's aspect ratio"):
        validate(to_request(*values(picture, last_image=str(tall)))[0])


def test_lora_rows_take_a_pick_from_a_session_the_server_does_not_know(settings, engine):
    """The rows are built empty and filled by each page load; a tab whose server session is gone (a
    restart, another API node, an evicted session) still sends its pick, and a session that ran the
    load event is offered the library's files."""
    import asyncio

    from gradio.state_holder import SessionState

    from bench.lora_files import write_lightx2v
    from wan_demo import server

    library = settings.output_dir.parent / "loras"
    library.mkdir()
    write_lightx2v(engine.pipe.transformer, library / "motion.safetensors")
    s = server.build(settings.replace(lora_dir=library)).start()
    try:
        demo = server.ui.build_ui(s.jobs, s.jobs.engine_info(), s.settings)
        row = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "lora-0")
        load = next(f for f in demo.fns.values() if f.name == "refresh" and ("load" in str(f.targets)))
        unknown = SessionState(demo)
        assert unknown[row._id].preprocess("motion.safetensors") == "motion.safetensors"
        loaded = SessionState(demo)
        asyncio.run(demo.process_api(load, [], state=loaded))
        assert ("motion.safetensors", "motion.safetensors") in loaded[row._id].choices
    finally:
        s.stop()
