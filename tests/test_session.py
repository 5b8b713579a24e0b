"""The page's generation buttons and its follower (web/session.py) driven like Gradio drives them, on
the real job queue and worker (tiny model), for one visitor: Generate queues a job of the visitor,
the follower shows the status line and the live preview, then the video in the preview's place (a
`?job=` reload follows the same way); New seed; Use last frame and Extend of the result shown; and
another visitor gets "not found" for it, exactly as for an id that does not exist."""

from __future__ import annotations

import asyncio
import time
import uuid

import gradio as gr
import numpy as np
import pytest
from conftest import make_image
from PIL import Image

from wan_demo.jobs.service import JobService
from wan_demo.jobs.store.sqlite import SqliteJobStore
from wan_demo.jobs.worker import Worker
from wan_demo.media.clip import last_frame
from wan_demo.media.video import count_frames
from wan_demo.web.history import NOT_FOUND, PageView
from wan_demo.web.owners import new_token, owner_for
from wan_demo.web.session import Session


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
def session(jobs) -> Session:
    return Session(jobs)


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pictures") / "in.png"
    make_image(96, 64).save(path)
    return str(path)


def follow(session: Session, token: str, view: PageView) -> list[tuple]:
    """Every update the page's follower sent (Gradio iterates the async generator the same way)."""

    async def collect() -> list[tuple]:
        return [update async for update in session.follow(token, view)]

    started = time.monotonic()
    updates = asyncio.run(collect())
    assert time.monotonic() - started < 300
    return updates


def settings_values(seed=7, length="5"):
    return (False, seed, length, "", 0, 0, "auto", "")  # prompt_extend ... prompt_2


@pytest.fixture(scope="module")
def alice(session, picture) -> tuple[str, PageView, list[tuple]]:
    """Generate pressed once by one browser: its token, its tab, every update the follower sent."""
    token, view = new_token(), PageView()
    job_id, message = session.submit(token, view, picture, "a cat walks", *settings_values())
    assert (view.job_id, message) == (job_id, "")
    return token, view, follow(session, token, view)


def test_generate_queues_for_the_visitor_and_shows_preview_then_the_video(alice, jobs):
    token, view, updates = alice
    assert jobs.get(view.job_id, owner_for(None, token)) is not None  # the visitor's own job
    assert jobs.get(view.job_id, "ui") is None  # no longer the shared UI owner
    status, preview, video, *_ = updates[0]
    assert preview["visible"] is True and video["visible"] is False  # the preview takes the video's place
    said = [u[0] for u in updates if isinstance(u[0], str) and u[0]]
    assert any("step" in text for text in said)
    shown = [u[1]["value"] for u in updates[1:-1] if isinstance(u[1], dict) and u[1].get("value")]
    assert shown and shown[-1].endswith(".webp")  # at least one live preview reached the page
    status, preview, video, thumbnail, final_prompt, seed_used, message = updates[-1]
    assert status == "" and preview["visible"] is False and video["visible"] is True
    assert count_frames(video["value"])[0] == 81 and (final_prompt, seed_used) == ("a cat walks", 7)
    assert "success" in message and "seed 7" in message


def test_a_reloaded_page_follows_a_running_job_with_its_preview(session, picture):
    """`?job=` after a reload: a new tab of the same browser (same token) follows the running job."""
    token = new_token()
    job_id, _ = session.submit(token, PageView(), picture, "a dog runs", *settings_values(seed=3))
    reloaded = PageView()
    reloaded.job_id = job_id  # what Page.load sets from ?job= for this visitor
    updates = follow(session, token, reloaded)
    assert any(isinstance(u[1], dict) and str(u[1].get("value") or "").endswith(".webp") for u in updates)
    assert count_frames(updates[-1][2]["value"])[0] == 81 and updates[-1][5] == 3


def test_new_seed_reruns_the_same_settings_with_a_random_seed(session, picture):
    token, view = new_token(), PageView()
    session.new_seed(token, view, picture, "a cat walks", *settings_values())
    *_, seed_used, _ = follow(session, token, view)[-1]
    assert seed_used != 7 and 0 <= seed_used


def test_use_last_frame_and_extend_the_result_shown(session, jobs, alice):
    token, view, updates = alice
    shown = view.job_id
    handler = session.use_last_frame(token, view)
    with Image.open(next(handler)) as frame:  # Gradio copies the file before resuming the handler
        assert frame.format == "PNG"
        job = jobs.get(shown, owner_for(None, token))
        np.testing.assert_array_equal(np.asarray(frame), np.asarray(last_frame(job.video_path)))
    handler.close()
    extended = PageView()
    extended.job_id = shown
    new_id, _ = session.extend_shown(token, extended, "the cat sits", *settings_values(seed=8))
    assert extended.job_id == new_id != shown  # Extend again continues this one
    last = follow(session, token, extended)[-1]
    assert count_frames(last[2]["value"])[0] == 161
    assert jobs.get(new_id, owner_for(None, token)).params["parent"]["request_id"] == shown
    with pytest.raises(gr.Error, match="generate a video first"):
        session.extend_shown(token, PageView(), "x", *settings_values())


def test_another_visitor_cannot_extend_or_take_the_last_frame_of_a_result(session, jobs, alice):
    """Bob's tab pointed at Alice's result (say a stale tab after signing in as someone else) reads
    exactly like an id that never existed: the same "not found", nothing queued."""
    _, view, _ = alice
    bob = new_token()
    before = jobs.list(owner_for(None, bob), limit=1)[1]
    messages = []
    for job_id in (view.job_id, str(uuid.uuid4())):
        foreign = PageView()
        foreign.job_id = job_id
        with pytest.raises(gr.Error) as extend:
            session.extend_shown(bob, foreign, "mine now", *settings_values())
        with pytest.raises(gr.Error) as frame:
            next(session.use_last_frame(bob, foreign))
        messages.append((str(extend.value), str(frame.value)))
        assert follow(session, bob, foreign)[-1][-1] == NOT_FOUND  # nor can it be followed
    assert messages[0] == messages[1] and "Not found." in messages[0][0]
    assert jobs.list(owner_for(None, bob), limit=1)[1] == before == 0
    assert jobs.get(view.job_id, owner_for(None, bob)) is None


def test_a_page_without_identity_cannot_generate(session, picture):
    with pytest.raises(gr.Error, match="reload"):
        session.submit(None, PageView(), picture, "a cat", *settings_values())


def test_the_follower_stops_when_the_job_is_gone(session, jobs, picture):
    token, view = new_token(), PageView()
    session.submit(token, view, picture, "soon deleted", *settings_values())
    assert jobs.delete(view.job_id, owner_for(None, token))
    last = follow(session, token, view)[-1]
    assert last[-1] == NOT_FOUND and last[2]["visible"] is True and last[1]["visible"] is False
    assert jobs.get(view.job_id, owner_for(None, token)) is None


def test_a_batch_from_the_page_shows_side_by_side_and_each_opens(session, jobs, picture):
    """Generate with the Videos slider at 3: three jobs of the visitor (seeds 20, 21, 22); the page
    follows the first; the batch strip lists all three in seed order; clicking the third opens it
    as the page's result (what Extend, Restore and Delete act on)."""
    from wan_demo.web.batch import BatchStrip

    token, view = new_token(), PageView()
    extra = (None, 0, 0, 0, False, 3)  # last_image, nag_scale, nag_tau, nag_alpha, interpolate, num_videos
    job_id, _ = session.submit(token, view, picture, "a cat walks", *settings_values(seed=20), *extra)
    owner = owner_for(None, token)
    batch = jobs.get(job_id, owner).batch_id
    assert batch and view.job_id == job_id
    strip = BatchStrip(session.history)
    follow(session, token, view)
    deadline = time.monotonic() + 300
    while any(j.status != "success" for j in jobs.list(owner, batch_id=batch)[0]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    update, ids = strip.show(token, view)
    assert update["visible"] is True and len(ids) == 3 and ids[0] == job_id
    captions = [caption for _, caption in update["value"]]
    assert [c.split("seed ")[1].split(" ")[0] for c in captions] == ["20", "21", "22"]
    assert all(str(item).endswith(".mp4") for item, _ in update["value"])  # the videos, side by side
    opened, _ = strip.open(token, view, ids, gr.SelectData(None, {"index": 2, "value": None}))
    assert opened == ids[2] == view.job_id
    assert strip.show(new_token(), view)[0]["visible"] is False  # another visitor sees no batch
