"""REST API over real HTTP on 127.0.0.1 with the tiny model: lifecycle, listing, models, cancel, auth."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from apitools import (
    BASE,
    KEY_A,
    KEY_B,
    api_settings,
    auth,
    b64_image,
    body,
    paused_generation,
    serve,
    submit,
    wait_status,
)
from conftest import make_image

from wan_demo.core.settings import API_MODEL_ID


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    with serve(api_settings(tmp_path_factory.mktemp("api")), engine) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def png() -> str:
    return b64_image(make_image(96, 64))


def test_lifecycle_submit_processing_success(client, png, server, monkeypatch):
    with paused_generation(monkeypatch) as (reached, release):
        r = submit(client, png, prompt_extend=True, seed=1234)
        assert r.status_code == 200, r.text
        sub = r.json()
        assert set(sub) == {"request_id", "model", "status", "created_at", "updated_at", "queued_at",
                            "request_ids", "batch_id"}  # fmt: skip
        assert sub["request_ids"] == [sub["request_id"]] and sub["batch_id"] is None  # not a batch
        assert sub["status"] == "queued" and sub["model"] == API_MODEL_ID
        assert r.headers["location"] == f"{BASE}/requests/{sub['request_id']}"
        assert reached.wait(30)
        url = r.headers["location"]
        mid = client.get(url, headers=auth()).json()
        assert mid["status"] == "processing" and 0 < mid["progress"] < 100 and mid["started_at"]
        assert mid["queue_position"] == 0 and mid["outcome"] == {
            "video_url": None,
            "thumbnail_image_url": None,
        }
        release.set()
        done = wait_status(client, url, ("success", "failed", "cancelled"))
    assert done["status"] == "success", done
    for name in (
        "request_id",
        "org_id",
        "model",
        "status",
        "is_public",
        "payload",
        "outcome",
        "qworker_id",
        "created_at",
        "updated_at",
        "queued_at",
    ):
        assert name in done
    assert done["progress"] == 100 and done["error"] is None and done["seed_used"] == 1234
    assert (
        done["final_prompt"].startswith("a cat walks on grass")
        and done["final_prompt"] != "a cat walks on grass"
    )
    assert done["payload"]["prompt_extend"] is True and done["payload"]["video_length"] == 5
    assert done["payload"]["path_input_image"].startswith("<PNG image")  # never the raw base64
    assert done["created_at"] <= done["started_at"] <= done["completed_at"]

    video = client.get(done["outcome"]["video_url"], headers=auth())
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.headers["x-content-type-options"] == "nosniff" and video.content[4:8] == b"ftyp"
    thumb = client.get(done["outcome"]["thumbnail_image_url"], headers=auth())
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    assert client.get(done["outcome"]["video_url"]).status_code == 401
    assert client.get(done["outcome"]["video_url"], headers=auth(KEY_B)).status_code == 404
    Path(server[1].jobs.store.get(done["request_id"]).video_path).unlink()  # outputs expire (output_ttl_h)
    gone = client.get(done["outcome"]["video_url"], headers=auth())
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "expired"


def test_list_filters_and_pages(client, png, server):
    ids = [submit(client, png, key=KEY_B).json()["request_id"] for _ in range(3)]
    for rid in ids:
        wait_status(client, f"{BASE}/requests/{rid}", ("success", "failed"), key=KEY_B)
    page = client.get(f"{BASE}/requests", params={"model_id": API_MODEL_ID, "limit": 2}, headers=auth(KEY_B))
    data = page.json()
    assert data["total"] == 3 and [r["request_id"] for r in data["requests"]] == ids[::-1][:2]
    assert data["next_offset"] == 2
    rest = client.get(f"{BASE}/requests", params={"offset": 2}, headers=auth(KEY_B)).json()
    assert [r["request_id"] for r in rest["requests"]] == ids[:1] and rest["next_offset"] is None
    other = client.get(f"{BASE}/requests", params={"model_id": "other-model"}, headers=auth(KEY_B)).json()
    assert other["total"] == 0
    mine = client.get(f"{BASE}/requests", headers=auth(KEY_A)).json()
    assert not set(ids) & {r["request_id"] for r in mine["requests"]}  # only the caller's own
    assert (
        client.get(f"{BASE}/requests", params={"status": "success"}, headers=auth(KEY_B)).json()["total"] == 3
    )
    assert client.get(f"{BASE}/requests", params={"limit": 0}, headers=auth(KEY_B)).status_code == 422


def test_models_routes(client):
    assert client.get(f"{BASE}/models", headers=auth()).json() == {"model_ids": [API_MODEL_ID]}
    info = client.get(f"{BASE}/models/{API_MODEL_ID}", headers=auth()).json()
    assert info["id"] == API_MODEL_ID and info["resolution"] == "832x480" and info["fps"] == 16
    assert info["video_lengths"] == [5, 10] and info["parameters"]["seed"]["default"] == -1
    assert info["parameters"]["seed"]["constraints"] == {"min": -1, "max": 2**31 - 1}
    missing = client.get(f"{BASE}/models/nope", headers=auth())
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_model"


def test_cancel_queued_and_processing(client, png, monkeypatch):
    with paused_generation(monkeypatch) as (reached, release):
        running = submit(client, png).json()["request_id"]
        assert reached.wait(30)
        queued = submit(client, png).json()["request_id"]
        assert client.get(f"{BASE}/requests/{queued}", headers=auth()).json()["queue_position"] == 1
        r = client.post(f"{BASE}/requests/{queued}/cancel", headers=auth())
        assert r.status_code == 200 and r.json()["status"] == "cancelled"  # at once
        r = client.post(f"{BASE}/requests/{running}/cancel", headers=auth())
        assert r.status_code == 200 and r.json()["status"] == "processing"
        release.set()  # the next denoising step sees the stop flag
        final = wait_status(client, f"{BASE}/requests/{running}", ("success", "failed", "cancelled"))
    assert final["status"] == "cancelled" and final["outcome"]["video_url"] is None
    again = client.post(f"{BASE}/requests/{queued}/cancel", headers=auth())
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"
    assert client.get(f"{BASE}/requests/{queued}", headers=auth()).json()["status"] == "cancelled"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY_A}, {"Authorization": "Basic x"}]
)
def test_auth_rejects(client, png, headers):
    for method, path in [("get", "/models"), ("get", "/requests"), ("post", "/requests")]:
        r = client.request(method.upper(), BASE + path, headers=headers, json=body(png))
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (path, r.text)


def test_other_keys_request_is_404(client, png):
    rid = submit(client, png, key=KEY_A).json()["request_id"]
    for path in (f"/requests/{rid}", f"/requests/{rid}/video"):
        r = client.get(BASE + path, headers=auth(KEY_B))
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.post(f"{BASE}/requests/{rid}/cancel", headers=auth(KEY_B)).status_code == 404
    wait_status(client, f"{BASE}/requests/{rid}", ("success", "failed"))


def test_no_keys_configured_refuses(engine, tmp_path, png):
    with serve(api_settings(tmp_path, api_keys=""), engine) as (url, _service, _worker):
        r = httpx.get(f"{url}{BASE}/models", headers=auth())
    assert r.status_code == 503 and "WAN_DEMO_API_KEYS" in r.json()["error"]["message"]


def test_openapi_has_typed_routes(client):
    spec = client.get("/api/v1/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/apikey/requests",
        "/apikey/requests/{request_id}",
        "/apikey/requests/{request_id}/cancel",
        "/apikey/models",
        "/apikey/models/{model_id}",
    ):
        assert path in paths
    schemas = spec["components"]["schemas"]
    assert {"SubmitBody", "SubmitPayload", "RequestView", "ModelInfo", "ErrorBody"} <= set(schemas)
    payload = schemas["SubmitPayload"]["properties"]
    assert payload["video_length"]["enum"] == [5, 10] and payload["seed"]["maximum"] == 2**31 - 1
