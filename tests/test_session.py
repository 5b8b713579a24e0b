"""The page's own handlers (web/session.py) driven like Gradio drives them, on the real job queue and
worker (tiny model): the status line and the preview while running, the video in the preview's
place at the end, New seed, Use last frame, and Extend of the result shown."""

from __future__ import annotations

import time

import gradio as gr
import numpy as np
import pytest
from conftest import make_image
from PIL import Image

from wan_demo.jobs.service import JobService
from wan_demo.jobs.store_sqlite import SqliteJobStore
from wan_demo.jobs.worker import Worker
from wan_demo.media.clip import last_frame
from wan_demo.media.video import count_frames
from wan_demo.web import session


@pytest.fixture(scope="module")
def jobs(engine, tmp_path_factory):
    from wan_demo.core.settings import Settings

    root = tmp_path_factory.mktemp("session")
    settings = Settings(
        model="tiny",
        device="cpu",
        tiny_max_area=64 * 64,
        steps=3,
        prompt_extender="rules",
        output_dir=root / "outputs",
        data_dir=root / "data",
        preview_every_s=1e-6,
    )
    service = JobService(SqliteJobStore(root / "data" / "jobs.sqlite3"), settings, engine.plan_info).start()
    service.worker = Worker(service.store, engine, settings).start()
    yield service
    service.worker.stop()
    service.close()


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pictures") / "in.png"
    make_image(96, 64).save(path)
    return str(path)


def drive(handler, *values) -> list[tuple]:
    started = time.monotonic()
    updates = list(handler(*values))
    assert time.monotonic() - started < 300
    return updates


def settings_values(seed=7, length="5"):
    return (False, seed, length, "", 0, 0, "auto", "")  # prompt_extend ... prompt_2


@pytest.fixture(scope="module")
def first(jobs, picture) -> list[tuple]:
    """Generate pressed once: every update the handler sent."""
    return drive(session.make_run(jobs), picture, "a cat walks", *settings_values())


def test_run_shows_status_and_preview_then_the_video_in_its_place(first):
    updates = first
    status, preview, video, *_ = updates[0]
    assert preview["visible"] is True and video["visible"] is False  # the preview takes the video's place
    said = [u[0] for u in updates if isinstance(u[0], str) and u[0]]
    assert any("step" in text for text in said)
    shown = [u[1]["value"] for u in updates[1:-1] if isinstance(u[1], dict) and u[1].get("value")]
    assert shown and shown[-1].endswith(".webp")  # at least one live preview reached the page
    status, preview, video, thumbnail, final_prompt, seed_used, job_id = updates[-1]
    assert status == "" and preview["visible"] is False and video["visible"] is True
    assert count_frames(video["value"])[0] == 81 and (final_prompt, seed_used) == ("a cat walks", 7)


def test_new_seed_reruns_the_same_settings_with_a_random_seed(jobs, picture):
    *_, seed_used, _ = drive(
        session.make_run(jobs, new_seed=True), picture, "a cat walks", *settings_values()
    )[-1]
    assert seed_used != 7 and 0 <= seed_used


def test_use_last_frame_and_extend_the_result_shown(jobs, first):
    shown = first[-1][-1]  # the job id the page keeps for the result it shows
    handler = session.make_use_last_frame(jobs)(shown)
    with Image.open(next(handler)) as frame:  # Gradio copies the file before resuming the handler
        assert frame.format == "PNG"
        np.testing.assert_array_equal(
            np.asarray(frame), np.asarray(last_frame(jobs.get(shown, "ui").video_path))
        )
    handler.close()
    last = drive(session.make_extend_result(jobs), shown, "the cat sits", *settings_values(seed=8))[-1]
    assert count_frames(last[2]["value"])[0] == 161 and last[-1] != shown  # Extend again continues this
    with pytest.raises(gr.Error, match="generate a video first"):
        drive(session.make_extend_result(jobs), None, "x", *settings_values())
