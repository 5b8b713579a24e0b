"""Settings read back from our MP4 metadata (and from a history item) into form values; files
without our metadata, or with hostile content, give "no settings found in this file"."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ask, make_image

from wan_demo.core.plan import DEFAULT_NEGATIVE_PROMPT
from wan_demo.generate import generate
from wan_demo.jobs.common import Job, Status
from wan_demo.media.video import NoMetadata, read_mp4_metadata, write_mp4
from wan_demo.web import restore

PROMPT = "a \"quoted\" cat\nsays 'hi' — 猫が歩く; 100% \\ $(no)"


@pytest.fixture(scope="module")
def made(engine, tmp_path_factory):
    """One real 5 s clip from generate() on the tiny model, with a tricky prompt."""
    from wan_demo.core.settings import Settings

    out = tmp_path_factory.mktemp("restore")
    settings = Settings(model="tiny", tiny_max_area=64 * 64, steps=2, output_dir=out, prompt_extender="rules")
    request = ask(make_image(), PROMPT, seed=77, guidance=3.5, negative_prompt="blurry, text")
    return generate(request, engine, settings)


def test_settings_come_back_from_our_mp4(made):
    r = restore.from_file(made.video_path, 10 * 2**20)
    assert (r.prompt, r.final_prompt, r.seed, r.video_length) == (PROMPT, PROMPT, 77, "5")
    assert (r.speed_mode, r.steps, r.guidance) == ("quality", 2, 3.5)  # what ran, not "auto"
    assert (r.negative_prompt, r.prompt_extend) == ("blurry, text", False)
    form = r.form(fast_available=False)
    # "": no prompt_2; then no end frame, NAG unset (0), no interpolation
    assert form == (
        PROMPT,
        False,
        77,
        "5",
        "blurry, text",
        2,
        3.5,
        "quality",
        "",
        None,
        0.0,
        0.0,
        0.0,
        False,
        PROMPT,
    )


def test_the_sidecar_and_the_mp4_agree(made):
    sidecar = json.loads(made.metadata_path.read_text())
    assert restore.from_metadata(sidecar) == restore.from_file(made.video_path, 10 * 2**20)


def test_default_negative_prompt_length_and_extension_are_read_from_older_fields(made):
    meta = read_mp4_metadata(made.video_path)
    meta["settings"] = {**meta["settings"], "negative_prompt": DEFAULT_NEGATIVE_PROMPT, "speed_mode": "fast"}
    meta["settings"].pop("segments")
    meta.update(num_frames=161, prompt_info={"backend": "rules"}, final_prompt="a longer prompt")
    r = restore.from_metadata(meta)
    assert (r.negative_prompt, r.video_length, r.prompt_extend, r.final_prompt) == (
        "",
        "10",
        True,
        "a longer prompt",
    )
    assert r.form(fast_available=False)[7] == "auto"  # no LoRA on this server: fast is not offered
    assert r.form(fast_available=True)[7] == "fast"


def write(tmp_path, name: str, metadata) -> str:
    frames = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    return str(write_mp4(frames, tmp_path / name, 16, metadata))


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"prompt": "x"},  # no settings, no seed
        {"prompt": "x", "seed": 1, "settings": "not a dict"},
        {"prompt": "x", "seed": 2**40, "settings": {"segments": 1}},  # out of range
        {"prompt": "", "seed": 1, "settings": {"segments": 1}},
        {"prompt": "x" * 5000, "seed": 1, "settings": {"segments": 1}},
        {"prompt": "x", "seed": 1, "settings": {"segments": 1, "steps": "rm -rf /"}},
        {"prompt": "x", "seed": 1, "settings": {"segments": 3}},  # 15 s: not a length we make
        [1, 2, 3],
    ],
)
def test_foreign_or_hostile_metadata_restores_nothing(tmp_path, metadata):
    with pytest.raises(restore.NoSettings, match="no settings found in this file"):
        restore.from_file(write(tmp_path, "m.mp4", metadata), 10 * 2**20)


def test_files_that_are_not_our_mp4s(tmp_path):
    png = tmp_path / "picture.mp4"
    make_image().save(png, format="PNG")
    playlist = tmp_path / "playlist.mp4"  # an HLS playlist must never make ffmpeg open a file
    playlist.write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(open(write(tmp_path, "ok.mp4", {"prompt": "x"}), "rb").read()[:40])
    for path in (png, playlist, truncated, tmp_path / "missing.mp4"):
        with pytest.raises(restore.NoSettings, match="^no settings found in this file$"):
            restore.from_file(path, 10 * 2**20)
    with pytest.raises(NoMetadata, match="larger than 100 bytes"):
        read_mp4_metadata(write(tmp_path, "big.mp4", {"prompt": "x"}), max_bytes=100)


def test_a_history_item_restores_what_ran_or_what_was_asked(made, image):
    asked = ask(
        image, "queued clip", video_length_s=10, seed=-1, steps=12, speed_mode="quality", prompt_2="then"
    ).params()
    job = Job("id", "ui:hf:alice", "ui", "m", asked, asked, "/nonexistent")
    r = restore.from_job(job)
    assert (r.prompt, r.video_length, r.seed, r.steps, r.guidance, r.speed_mode, r.prompt_2) == (
        "queued clip", "10", -1, 12, 0.0, "quality", "then",
    )  # fmt: skip
    done = Job("id2", "ui:hf:alice", "ui", "m", asked, asked, "/nonexistent", status=Status.SUCCESS,
               metadata_path=str(made.metadata_path), seed_used=77)  # fmt: skip
    assert restore.from_job(done).prompt == PROMPT  # its sidecar: what actually ran
