"""The recipe end to end on the tiny model: frames, seeds, cancel, progress, files on disk."""

import json
import threading

import numpy as np
import pytest
from conftest import ask

from wan_demo.core.request import GenerationCancelled, GenerationRequest, InvalidRequest
from wan_demo.core.settings import SEED_MAX
from wan_demo.generate import generate
from wan_demo.media.video import count_frames, read_mp4_metadata


def test_five_second_clip_writes_mp4_thumbnail_and_metadata(engine, settings, image):
    reports = []
    result = generate(ask(image, "a cat walks", seed=7), engine, settings, reports.append)
    assert result.num_frames == 81 and result.fps == 16 and result.duration_s == pytest.approx(81 / 16)
    assert (result.width, result.height) == (64, 48)  # 3:2 input inside the 64*64 test budget
    assert count_frames(result.video_path) == (81, 64, 48)
    assert result.thumbnail_path.stat().st_size > 0 and result.thumbnail_path.suffix == ".jpg"
    stored = read_mp4_metadata(result.video_path)
    assert stored["seed"] == 7 and stored["final_prompt"] == "a cat walks"
    assert stored["settings"]["steps"] == 2 and stored["num_frames"] == 81
    assert stored["is_tiny_model"] is True and "random weights" in stored["model"]
    assert stored["settings"]["weights"]["transformer"] == "float32"  # the weights and the plan, named
    assert stored["settings"]["memory"]["strategy"] == "resident"
    sidecar = json.loads(result.metadata_path.read_text())
    assert sidecar["id"] == result.id and set(sidecar["timings_s"]) >= {"pipeline", "encode", "image"}
    steps = [p for p in reports if p.stage == "denoise"]
    assert [(p.step, p.total_steps) for p in steps] == [(1, 2), (2, 2)]
    assert steps[-1].eta_s == 0.0 and reports[-1].stage == "done"


def test_ten_second_clip_chains_two_segments(engine, settings, image):
    result = generate(ask(image, "waves roll in", seed=3, video_length_s=10), engine, settings)
    assert result.num_frames == 161 and result.settings["segments"] == 2
    assert count_frames(result.video_path)[0] == 161


def _frames(engine, settings, image, seed):
    import imageio_ffmpeg

    result = generate(ask(image, "a dog runs", seed=seed), engine, settings)
    reader = imageio_ffmpeg.read_frames(str(result.video_path))
    next(reader)
    return result, np.stack([np.frombuffer(f, np.uint8) for f in reader])


def test_same_seed_same_frames_and_unique_files(engine, settings, image):
    first, a = _frames(engine, settings, image, seed=123)
    second, b = _frames(engine, settings, image, seed=123)
    _, c = _frames(engine, settings, image, seed=124)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert first.video_path != second.video_path and first.video_path.exists()


def test_random_seed_is_reported(engine, settings, image):
    result = generate(ask(image, "a dog runs", seed=-1), engine, settings)
    assert 0 <= result.seed_used <= SEED_MAX
    assert read_mp4_metadata(result.video_path)["seed"] == result.seed_used


def test_cancel_stops_mid_run_without_decoding_and_pipeline_stays_usable(
    engine, settings, image, monkeypatch
):
    stop = threading.Event()
    seen = []

    def on_progress(p):
        seen.append(p)
        if p.stage == "denoise" and p.step == 3:
            stop.set()

    decodes = []
    real_decode = engine.pipe.vae.decode
    monkeypatch.setattr(engine.pipe.vae, "decode", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))
    slow = settings.replace(steps=50)
    with pytest.raises(GenerationCancelled, match="after step 4/50"):
        generate(ask(image, "a dog runs", seed=1), engine, slow, on_progress, stop)
    assert max(p.step for p in seen if p.stage == "denoise") == 3
    assert not list(slow.output_dir.glob("*.mp4"))
    assert decodes == []  # cancelled: the VAE decode never ran
    result = generate(ask(image, "a dog runs", seed=1), engine, settings)
    assert result.num_frames == 81
    assert decodes == [1]


def test_generate_takes_only_a_validated_request(engine, settings, image):
    with pytest.raises(TypeError, match="ValidRequest"):
        generate(GenerationRequest(image, "ok", seed=5), engine, settings)  # type: ignore[arg-type]
    assert not settings.output_dir.exists()


def test_fast_mode_without_its_lora_is_refused_before_any_work(engine, settings, image):
    with pytest.raises(InvalidRequest, match="'fast' needs the step-distilled LoRA"):
        generate(ask(image, "ok", speed_mode="fast"), engine, settings)
    assert not settings.output_dir.exists()


def test_prompt_is_encoded_once_and_reused_across_seeds_and_segments(engine, settings, image):
    """A re-roll (new seed, same prompt) and the second segment of a 10 s clip skip the text
    encoder: its forward runs once per (prompt, negative prompt) (2 calls with CFG: both texts)."""
    calls = []
    hook = engine.pipe.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        prompt = "a re-rolled prompt, encoded once"
        generate(ask(image, prompt, seed=1, video_length_s=10), engine, settings.replace(guidance=5.0))
        assert len(calls) == 2  # prompt + negative prompt, for both segments together
        generate(ask(image, prompt, seed=2), engine, settings.replace(guidance=5.0))
        assert len(calls) == 2  # re-roll: no encoder run
        generate(ask(image, prompt + " (changed)", seed=2), engine, settings.replace(guidance=5.0))
        assert len(calls) == 4
    finally:
        hook.remove()
