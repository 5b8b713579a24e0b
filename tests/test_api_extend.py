"""REST: the live preview (`preview_url` while processing) and extending a request
(`parent_request_id`), over real HTTP with the tiny model; refusals name the reason and leave no file."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import imageio_ffmpeg
import numpy as np
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
from PIL import Image

DONE = ("success", "failed", "cancelled")


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    with serve(api_settings(tmp_path_factory.mktemp("api-extend")), engine) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def png() -> str:
    return b64_image(make_image(96, 64))


def extend(client, parent_id: str, key=KEY_A, **payload) -> httpx.Response:
    payload = {"prompt": "then the cat sits", "parent_request_id": parent_id, **payload}
    return client.post(
        f"{BASE}/requests", json={"model": body("")["model"], "payload": payload}, headers=auth(key)
    )


def decode(data: bytes, folder: Path) -> np.ndarray:
    path = folder / "v.mp4"
    path.write_bytes(data)
    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])


@pytest.fixture(scope="module")
def finished(client, png):
    """A successful request of KEY_A (the parent of the extension tests)."""
    rid = submit(client, png, seed=11).json()["request_id"]
    done = wait_status(client, f"{BASE}/requests/{rid}", DONE)
    assert done["status"] == "success", done
    return done


def test_preview_url_serves_an_image_while_processing(client, png, server, monkeypatch):
    with paused_generation(monkeypatch) as (reached, release):
        rid = submit(client, png, seed=3).json()["request_id"]
        assert reached.wait(60)  # held after the first denoising step, whose preview is written
        view = client.get(f"{BASE}/requests/{rid}", headers=auth()).json()
        assert view["status"] == "processing" and view["preview_url"].endswith(f"/requests/{rid}/preview")
        shown = client.get(view["preview_url"], headers=auth())
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/webp"
        assert shown.headers["x-content-type-options"] == "nosniff"
        with Image.open(io.BytesIO(shown.content)) as image:
            assert image.format == "WEBP" and image.n_frames == 21  # one per latent frame of 81 frames
        assert client.get(view["preview_url"]).status_code == 401
        assert client.get(view["preview_url"], headers=auth(KEY_B)).status_code == 404
        preview_file = Path(server[1].jobs.store.get(rid).preview_path)
        assert preview_file.parent.name == "rest" and preview_file.is_file()  # with the REST outputs
        release.set()
        done = wait_status(client, f"{BASE}/requests/{rid}", DONE)
    assert done["status"] == "success" and done["preview_url"] is None
    after = client.get(f"{BASE}/requests/{rid}/preview", headers=auth())
    assert after.status_code == 409 and after.json()["error"]["code"] == "not_ready"
    assert not preview_file.exists()  # a preview lives only while its request runs


def test_extend_a_request_joins_the_parent_and_80_new_frames(client, finished, tmp_path):
    r = extend(client, finished["request_id"], seed=12)
    assert r.status_code == 200, r.text
    done = wait_status(client, r.headers["location"], DONE)
    assert done["status"] == "success", done
    assert done["payload"]["parent_request_id"] == finished["request_id"]
    assert done["payload"]["path_input_image"] is None
    joined = decode(client.get(done["outcome"]["video_url"], headers=auth()).content, tmp_path)
    parent = decode(client.get(finished["outcome"]["video_url"], headers=auth()).content, tmp_path)
    assert joined.shape[0] == 161 and parent.shape[0] == 81
    np.testing.assert_array_equal(joined[:81], parent)


def test_extend_refusals_name_the_reason(client, png, finished, server, monkeypatch):
    inputs = Path(server[1].settings.data_dir) / "inputs"
    before = sorted(inputs.iterdir())

    def refused(response, status, code, field="payload.parent_request_id"):
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert (error["code"], error["field"]) == (code, field)
        return error["message"]

    assert "no request" in refused(extend(client, finished["request_id"], key=KEY_B), 404, "parent_not_found")
    assert "no request" in refused(extend(client, "nope"), 404, "parent_not_found")
    both = client.post(
        f"{BASE}/requests", headers=auth(), json=body(png, parent_request_id=finished["request_id"])
    )
    assert "left out" in refused(both, 422, "invalid_input", "payload.path_input_image")
    neither = client.post(f"{BASE}/requests", headers=auth(), json={**body(png), "payload": {"prompt": "x"}})
    assert "is required" in refused(neither, 422, "invalid_input", "payload.path_input_image")
    with paused_generation(monkeypatch) as (reached, release):
        busy = submit(client, png).json()["request_id"]
        assert reached.wait(60)
        assert "processing" in refused(extend(client, busy), 409, "parent_not_success")
        waiting = submit(client, png).json()["request_id"]
        client.post(f"{BASE}/requests/{waiting}/cancel", headers=auth())
        assert "cancelled" in refused(extend(client, waiting), 409, "parent_not_success")
        release.set()
    wait_status(client, f"{BASE}/requests/{busy}", DONE)
    worker, real = server[2], server[2].run

    def broken(*args, **kwargs):
        raise RuntimeError("the GPU fell off")

    monkeypatch.setattr(worker, "run", broken)
    failed = submit(client, png).json()["request_id"]
    assert wait_status(client, f"{BASE}/requests/{failed}", DONE)["status"] == "failed"
    monkeypatch.setattr(worker, "run", real)
    assert "failed" in refused(extend(client, failed), 409, "parent_not_success")
    stored = {path.name.split(".")[0] for path in set(inputs.iterdir()) - set(before)}
    assert stored == {busy, waiting, failed}  # the refused extensions stored nothing
    video = Path(server[1].jobs.store.get(finished["request_id"]).video_path)
    kept = video.read_bytes()
    video.unlink()  # outputs expire (output_ttl_h)
    try:
        assert "deleted" in refused(extend(client, finished["request_id"]), 410, "parent_expired")
    finally:
        video.write_bytes(kept)
