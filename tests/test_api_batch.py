"""Issue 24 over real HTTP (tiny model): batches (num_videos), the end frame (path_last_image),
interpolation and NAG fields, and their refusals: a clear 4xx naming the field, nothing stored."""

from __future__ import annotations

import json

import httpx
import pytest
from apitools import BASE, KEY_A, KEY_B, api_settings, auth, b64_image, body, serve, submit, wait_status
from conftest import make_image

from wan_demo.jobs.common import Status


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    with serve(api_settings(tmp_path_factory.mktemp("api-batch"), submits_per_min=30), engine) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


PNG = b64_image(make_image(96, 64))


def test_a_batch_of_three_gives_three_requests_with_consecutive_seeds(client, server):
    r = submit(client, PNG, seed=1000, num_videos=3)
    assert r.status_code == 200, r.text
    sub = r.json()
    ids, batch = sub["request_ids"], sub["batch_id"]
    assert len(set(ids)) == 3 and sub["request_id"] == ids[0] and batch
    assert int(r.headers["ratelimit-remaining"]) == 30 - 3  # a batch counts as its number of videos
    done = [wait_status(client, f"{BASE}/requests/{i}", ("success", "failed"), timeout=120) for i in ids]
    assert [d["status"] for d in done] == ["success"] * 3
    assert [d["seed_used"] for d in done] == [1000, 1001, 1002]
    assert {d["batch_id"] for d in done} == {batch}
    assert [d["payload"]["seed"] for d in done] == [1000, 1001, 1002]
    assert {d["payload"]["num_videos"] for d in done} == {3}
    listed = client.get(f"{BASE}/requests", params={"batch_id": batch}, headers=auth()).json()
    assert listed["total"] == 3 and {x["request_id"] for x in listed["requests"]} == set(ids)
    other = client.get(f"{BASE}/requests", params={"batch_id": batch}, headers=auth(KEY_B)).json()
    assert other["total"] == 0  # another key never sees it


def test_random_seeds_are_drawn_for_each_video(client):
    sub = submit(client, PNG, seed=-1, num_videos=2).json()
    done = [
        wait_status(client, f"{BASE}/requests/{i}", ("success",), timeout=120) for i in sub["request_ids"]
    ]
    assert all(d["payload"]["seed"] == -1 for d in done) and done[0]["seed_used"] != done[1]["seed_used"]


def test_a_replayed_batch_answers_with_the_same_requests(client):
    key = {"Idempotency-Key": "batch-once", **auth()}
    first = client.post(f"{BASE}/requests", json=body(PNG, seed=5, num_videos=2), headers=key).json()
    again = client.post(f"{BASE}/requests", json=body(PNG, seed=5, num_videos=2), headers=key)
    assert again.headers["idempotent-replayed"] == "true"
    assert (
        again.json()["request_ids"] == first["request_ids"] and again.json()["batch_id"] == first["batch_id"]
    )
    for i in first["request_ids"]:
        wait_status(client, f"{BASE}/requests/{i}", ("success", "failed"), timeout=120)


def stored(server) -> tuple[int, int]:
    """(job rows of KEY_A's owner, files in the inputs folder)."""
    service = server[1]
    owner = service.keys.owner_of(f"Bearer {KEY_A}")
    inputs = service.jobs.inputs_dir
    return service.jobs.list(owner, limit=1)[1], len(list(inputs.glob("*"))) if inputs.exists() else 0


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"num_videos": 0}, "payload.num_videos", "0 is out of range 1..4"),
        ({"num_videos": 9}, "payload.num_videos", "9 is out of range 1..4"),
        ({"interpolate": 3}, "payload.interpolate", "3 is out of range 1..2"),
        ({"speed_mode": "quality", "nag_scale": 5.0}, "payload.nag_scale", "ignored in quality mode"),
        ({"nag_tau": 2.0}, "payload.nag_tau", "ignored in quality mode"),  # this server: quality
        ({"path_last_image": b64_image(make_image(64, 96))}, "payload.path_last_image", "aspect ratio"),
        ({"path_last_image": "aGVsbG8gd29ybGQ="}, "payload.path_last_image", "not a readable JPEG"),
        (
            {"path_last_image": "/etc/passwd"},
            "payload.path_last_image",
            "not a readable JPEG",
        ),  # never a path
    ],
)
def test_bad_input_is_a_4xx_naming_the_field_and_nothing_is_stored(client, server, payload, field, words):
    before = stored(server)
    r = submit(client, PNG, **payload)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field and words in error["message"], error
    assert stored(server) == before


def test_end_frame_and_interpolation_through_rest(client):
    end = b64_image(make_image(96, 64, seed=9))
    r = submit(client, PNG, path_last_image=end, interpolate=2, seed=7)
    done = wait_status(
        client, f"{BASE}/requests/{r.json()['request_id']}", ("success", "failed"), timeout=120
    )
    assert done["status"] == "success", done
    assert done["payload"]["interpolate"] == 2 and done["payload"]["path_last_image"].startswith("<PNG image")
    video = client.get(done["outcome"]["video_url"], headers=auth())
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"


@pytest.mark.parametrize(("limits", "code"), [({"queue_max_size": 2}, "queue_full"),
                                              ({"max_active_per_key": 2}, "too_many_active")])  # fmt: skip
def test_a_batch_over_a_limit_is_refused_whole(engine, tmp_path, limits, code):
    """No worker runs: the jobs stay queued. One job queued, then a batch of 2 does not fit."""
    settings = api_settings(tmp_path, **limits)
    with serve(settings, engine, run_worker=False) as (url, service, _), httpx.Client(base_url=url) as c:
        assert submit(c, PNG).status_code == 200
        r = submit(c, PNG, num_videos=2, seed=3)
        assert r.status_code == 429 and r.json()["error"]["code"] == code, r.text
        assert "this submit adds 2" in r.json()["error"]["message"]
        owner = service.keys.owner_of(f"Bearer {KEY_A}")
        assert service.jobs.list(owner)[1] == 1 and service.jobs.store.count((Status.QUEUED,)) == 1
        assert len(list(service.jobs.inputs_dir.glob("*"))) == 1  # the first job's input only
        assert json.loads(c.get(f"{BASE}/requests", headers=auth()).text)["total"] == 1
