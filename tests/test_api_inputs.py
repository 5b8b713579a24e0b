"""REST API bad-input corpus (status + error field for every rule), capacity limits, and 50 concurrent
submits that never run two generations at once. Real HTTP on 127.0.0.1, tiny model."""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from apitools import (
    KEY_A,
    KEY_B,
    api_settings,
    auth,
    b64_image,
    body,
    paused_generation,
    serve,
    wait_job,
    wait_status,
)
from conftest import ask, make_image
from PIL import Image

from wan_demo.generate import generate

BASE = "/api/v1/apikey/requests"
PNG = b64_image(make_image(96, 64))
FIELD = "payload.path_input_image"


def encoded(image: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def payload(**changes) -> dict:
    data = body(PNG)
    data["payload"].update(changes)
    return {"model": data["model"], "payload": {k: v for k, v in data["payload"].items() if v is not ...}}


CORPUS = [  # (case, JSON body, status, error field)
    ("wrong model", {**payload(), "model": "Wan-AI_Wan2.2"}, 422, "model"),
    ("missing model", {"payload": payload()["payload"]}, 422, "model"),
    ("missing payload", {"model": payload()["model"]}, 422, "payload"),
    ("payload not an object", {**payload(), "payload": "x"}, 422, "payload"),
    ("missing prompt", payload(prompt=...), 422, "payload.prompt"),
    ("empty prompt", payload(prompt="   "), 422, "payload.prompt"),
    ("prompt too long", payload(prompt="x" * 2001), 422, "payload.prompt"),
    ("prompt not a string", payload(prompt=123), 422, "payload.prompt"),
    ("missing image", payload(path_input_image=...), 422, FIELD),
    ("image not a string", payload(path_input_image=["x"]), 422, FIELD),
    ("bad base64", payload(path_input_image="not base64 at all!"), 422, FIELD),
    ("truncated base64", payload(path_input_image=PNG[:-7]), 422, FIELD),
    ("server path never read", payload(path_input_image="/etc/passwd"), 422, FIELD),
    ("relative path never read", payload(path_input_image="../app.py"), 422, FIELD),
    ("not an image", payload(path_input_image=base64.b64encode(b"hello world" * 10).decode()), 422, FIELD),
    ("GIF not allowed", payload(path_input_image=encoded(make_image(), "GIF")), 422, FIELD),
    ("data URI text/plain", payload(path_input_image="data:text/plain;base64," + PNG), 422, FIELD),
    ("data URI not base64", payload(path_input_image="data:image/png," + PNG), 422, FIELD),
    ("too many pixels", payload(path_input_image=encoded(Image.new("L", (8000, 6000)), "PNG")), 422, FIELD),
    ("too small", payload(path_input_image=encoded(make_image(8, 8), "PNG")), 422, FIELD),
    ("too big (bytes)", payload(path_input_image=base64.b64encode(b"\0" * 1_070_000).decode()), 422, FIELD),
    ("URL inputs disabled", payload(path_input_image="https://example.com/a.png"), 422, FIELD),
    ("video_length 7", payload(video_length=7), 422, "payload.video_length"),
    ("video_length string", payload(video_length="5"), 422, "payload.video_length"),
    ("video_length float", payload(video_length=5.5), 422, "payload.video_length"),
    ("seed too big", payload(seed=2**31), 422, "payload.seed"),
    ("seed below -1", payload(seed=-2), 422, "payload.seed"),
    ("seed string", payload(seed="1"), 422, "payload.seed"),
    ("prompt_extend string", payload(prompt_extend="yes"), 422, "payload.prompt_extend"),
    ("unknown payload field", payload(negative="x"), 422, "payload.negative"),
]


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    settings = api_settings(tmp_path_factory.mktemp("api_inputs"), max_active_per_key=3, queue_max_size=2)
    with serve(settings, engine) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


@pytest.mark.parametrize("case,data,status,field", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_is_rejected_with_field(client, case, data, status, field):
    r = client.post(BASE, json=data, headers=auth())
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["field"] == field and error["code"] == "invalid_input" and field in error["message"]


def test_raw_body_errors(client):
    bad_json = client.post(BASE, content=b"{not json", headers={**auth(), "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    huge = client.post(BASE, content=b"x" * 1_500_000, headers={**auth(), "Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"] == {
        "code": "body_too_large", "message": huge.json()["error"]["message"], "field": "body"
    }  # fmt: skip

    def chunks():  # no Content-Length: the limit is counted while streaming
        for _ in range(30):
            yield b"x" * 65536

    streamed = client.post(BASE, content=chunks(), headers={**auth(), "Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert client.get(BASE, headers=auth()).json()["total"] == 0  # nothing was stored


def test_accepted_forms(client, server):
    """Data URI (JPEG, WEBP) and base64 with line breaks are accepted; they are cancelled at once."""
    service = server[1]
    forms = [
        "data:image/jpeg;base64," + encoded(make_image(), "JPEG"),
        "data:image/webp;base64," + encoded(make_image(), "WEBP"),
        "\n".join(PNG[i : i + 76] for i in range(0, len(PNG), 76)),
    ]
    for form in forms:
        r = client.post(BASE, json=payload(path_input_image=form), headers=auth(KEY_B))
        assert r.status_code == 200, r.text
        client.post(f"{BASE}/{r.json()['request_id']}/cancel", headers=auth(KEY_B))
    for job in service.jobs.list(service.keys.owner_of(f"Bearer {KEY_B}"))[0]:
        wait_status(client, f"{BASE}/{job.request_id}", ("cancelled", "success"), key=KEY_B)


def test_per_key_limit_and_queue_full(client, monkeypatch):
    with paused_generation(monkeypatch) as (reached, release):
        first = client.post(BASE, json=payload(), headers=auth()).json()["request_id"]
        assert reached.wait(30)
        queued = [client.post(BASE, json=payload(), headers=auth()).json()["request_id"] for _ in range(2)]
        over = client.post(BASE, json=payload(), headers=auth())
        assert over.status_code == 429 and over.json()["error"]["code"] == "too_many_active"
        assert over.headers["retry-after"].isdigit()
        full = client.post(BASE, json=payload(), headers=auth(KEY_B))
        assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
        for rid in [*queued, first]:
            client.post(f"{BASE}/{rid}/cancel", headers=auth())
        release.set()
        final = wait_status(client, f"{BASE}/{first}", ("cancelled", "success", "failed"))
    assert final["status"] == "cancelled"


def test_50_concurrent_submits_never_overlap(engine, tmp_path):
    """50 parallel REST submits plus UI-style direct submits: every request is acknowledged once and the
    real generate() never runs twice at once. The first few run; the rest are cancelled to stay fast."""
    running, peak, ran, lock = [0], [0], [0], threading.Lock()
    real = generate

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            ran[0] += 1
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    settings = api_settings(tmp_path, steps=1, queue_max_size=64, max_active_per_key=64)
    with serve(settings, engine) as (url, service, worker), httpx.Client(base_url=url, timeout=60) as client:
        worker.run = counted  # the Worker's injection seam: every generation passes through here
        ui_jobs = [service.jobs.submit(ask(make_image(), "ui job"), "ui", "ui") for _ in range(2)]
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: client.post(BASE, json=payload(), headers=auth()), range(50)))
        assert [r.status_code for r in responses] == [200] * 50
        ids = [r.json()["request_id"] for r in responses]
        assert len(set(ids)) == 50
        for _ in range(1200):  # until the first REST request (the oldest one) has succeeded; bounded
            if client.get(BASE, params={"status": "success"}, headers=auth()).json()["total"]:
                break
            time.sleep(0.05)
        for rid in ids:
            client.post(f"{BASE}/{rid}/cancel", headers=auth())
        final = [wait_status(client, f"{BASE}/{rid}", ("success", "failed", "cancelled")) for rid in ids]
        owner = service.keys.owner_of(f"Bearer {KEY_A}")
        records = [service.jobs.get(rid, owner) for rid in ids]
        ui_done = [wait_job(service.jobs, job) for job in ui_jobs]
    statuses = [f["status"] for f in final]
    assert "failed" not in statuses and statuses.count("success") >= 1
    assert peak[0] == 1 and ran[0] >= 3  # two UI jobs + at least one REST job really ran
    runs = sorted((r.started_at, r.completed_at) for r in records if r.status == "success")
    assert [j.status for j in ui_done] == ["success", "success"]
    runs += [(j.started_at, j.completed_at) for j in ui_done]
    runs.sort()
    assert all(
        a[1] <= b[0] for a, b in zip(runs, runs[1:], strict=False)
    )  # store + worker: never overlapping
