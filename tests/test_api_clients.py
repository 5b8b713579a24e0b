"""REST for production clients, over real HTTP on 127.0.0.1 with the tiny model: every generation
control (bad values name the field and rule; good ones are echoed and used), Idempotency-Key,
the per-key rate limit, and fair queueing across keys with the positions reported along the way."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

import httpx
import pytest
from apitools import KEY_A, KEY_B, api_settings, auth, b64_image, body, serve, wait_status
from conftest import make_image

from wan_demo.jobs.common import StoreUnavailable

BASE = "/api/v1/apikey"
DONE = ("success", "failed", "cancelled")


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    # webhooks on, with no private allow-list: every non-public address is refused at submit
    settings = api_settings(
        tmp_path_factory.mktemp("clients"), max_active_per_key=12, steps=1, webhook_secret="w" * 40
    )
    with serve(settings, engine) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


PNG = b64_image(make_image(96, 64))


def cancel(client, request_id: str, key: str = KEY_A) -> dict:
    """Cancel (queued: at once; running: at its next step) and wait until it is final."""
    client.post(f"{BASE}/requests/{request_id}/cancel", headers=auth(key))
    return wait_status(client, f"{BASE}/requests/{request_id}", DONE, key=key)


def post(client, key=KEY_A, headers=None, top=None, **payload) -> httpx.Response:
    data = {**body(PNG, **payload), **(top or {})}
    return client.post(f"{BASE}/requests", json=data, headers={**auth(key), **(headers or {})})


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"num_inference_steps": "30"}, "payload.num_inference_steps", "valid integer"),
        ({"num_inference_steps": 2.5}, "payload.num_inference_steps", "valid integer"),
        ({"num_inference_steps": 0}, "payload.num_inference_steps", "0 is out of range 1..100"),
        ({"guidance_scale": "5"}, "payload.guidance_scale", "valid number"),
        ({"guidance_scale": 25}, "payload.guidance_scale", "25.0 is out of range 1.0..20.0"),
        ({"flow_shift": 0.5}, "payload.flow_shift", "0.5 is out of range 1.0..20.0"),
        ({"flow_shift": [3]}, "payload.flow_shift", "valid number"),
        ({"fps": 61}, "payload.fps", "61 is out of range 4..60"),
        ({"fps": 24.5}, "payload.fps", "valid integer"),
        ({"negative_prompt": 7}, "payload.negative_prompt", "valid string"),
        ({"negative_prompt": "x" * 2001}, "payload.negative_prompt", "the limit is 2000"),
        ({"speed_mode": "turbo"}, "payload.speed_mode", "'turbo' is unknown"),
        ({"speed_mode": "fast"}, "payload.speed_mode", "needs the step-distilled LoRA"),  # none here
        ({"speed_mode": "fast", "guidance_scale": 5.0}, "payload.guidance_scale", "ignored in fast mode"),
        ({"speed_mode": "quality", "nag_scale": 5.0}, "payload.nag_scale", "ignored in quality mode"),
        (
            {"guidance_scale": 1, "negative_prompt": "blur"},
            "payload.negative_prompt",
            "ignored without guidance",
        ),
    ],
)
def test_each_new_field_refuses_bad_values(client, payload, field, words):
    r = post(client, **payload)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", field) and words in error["message"], error


@pytest.mark.parametrize(
    ("top", "field", "words"),
    [
        ({"webhook_url": "http://127.0.0.1:9/hook"}, "webhook_url", "not a public address"),
        ({"webhook_url": "http://169.254.169.254/latest/meta-data/"}, "webhook_url", "not a public address"),
        ({"webhook_url": "http://localhost:8080/hook"}, "webhook_url", "not a public address"),  # a name
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url", "only https or http"),
        ({"webhook_url": "https://u:p@example.com/x"}, "webhook_url", "no user:password"),
        ({"webhook_events": ["completed"]}, "webhook_events", "needs webhook_url"),
        (
            {"webhook_url": "https://93.184.215.14/h", "webhook_events": ["done"]},
            "webhook_events",
            "'done' is",
        ),
        ({"webhook_url": "https://93.184.215.14/h", "webhook_events": []}, "webhook_events", "not be empty"),
        ({"webhook_url": 7}, "webhook_url", "valid string"),
    ],
)
def test_webhook_urls_that_are_not_public_are_refused_at_submit(client, top, field, words):
    r = post(client, top=top)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", field) and words in error["message"], error


def test_controls_are_echoed_and_used(client, server):
    chosen = dict(num_inference_steps=1, guidance_scale=3.5, flow_shift=7.0, fps=24, negative_prompt="blur")
    r = post(client, speed_mode="quality", **chosen)
    assert r.status_code == 200, r.text
    done = wait_status(client, r.headers["location"], DONE)
    assert done["status"] == "success", done
    assert {k: done["payload"][k] for k in chosen} == chosen and done["payload"]["speed_mode"] == "quality"
    plain = post(client).json()["request_id"]  # unset = as before: nothing echoed
    assert not set(chosen) & set(client.get(f"{BASE}/requests/{plain}", headers=auth()).json()["payload"])
    cancel(client, plain)
    sidecar = json.loads(Path(server[1].jobs.store.get(done["request_id"]).metadata_path).read_text())
    used = sidecar["settings"]
    assert (used["steps"], used["guidance"], used["shift"], used["negative_prompt"], sidecar["fps"]) == (
        1, 3.5, 7.0, "blur", 24,
    )  # fmt: skip


def test_openapi_documents_the_new_fields(client):
    spec = client.get("/api/v1/openapi.json").json()
    schemas = spec["components"]["schemas"]
    payload = schemas["SubmitPayload"]["properties"]
    assert payload["num_inference_steps"]["maximum"] == 100 and payload["fps"]["examples"] == [16]
    assert (
        payload["speed_mode"]["enum"] == ["quality", "fast", None] and payload["guidance_scale"]["examples"]
    )
    assert {"webhook_url", "webhook_events"} <= set(schemas["SubmitBody"]["properties"])
    assert "webhook" in schemas["RequestView"]["properties"] and "WebhookState" in schemas
    params = spec["paths"]["/apikey/requests"]["post"]["parameters"]
    assert [(p["name"], p["in"]) for p in params] == [("Idempotency-Key", "header")]
    info = client.get(f"{BASE}/models/Wan-AI_Wan2.1-I2V-14B-480P", headers=auth()).json()["parameters"]
    assert info["guidance_scale"]["constraints"] == {"min": 1.0, "max": 20.0}


def test_idempotency_key_returns_the_first_request(client, server):
    key = {"Idempotency-Key": "order-1234"}
    first = post(client, headers=key, seed=5)
    again = post(client, headers=key, seed=5)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["request_id"] == first.json()["request_id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    other = post(client, headers=key, seed=6)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    assert other.json()["error"]["field"] == "Idempotency-Key"
    elsewhere = post(client, key=KEY_B, headers=key, seed=5)  # keys are scoped per API key
    assert elsewhere.status_code == 200 and elsewhere.json()["request_id"] != first.json()["request_id"]
    jobs = server[1].jobs.list(server[1].keys.owner_of(f"Bearer {KEY_A}"), limit=100)[0]
    assert sum(j.payload.get("seed") == 5 for j in jobs) == 1  # one job for the two submits
    for r, k in ((first, KEY_A), (elsewhere, KEY_B)):  # nothing here needs the videos
        cancel(client, r.json()["request_id"], k)


def test_a_keyed_retry_after_a_dropped_connection_finds_the_committed_job(client, server, monkeypatch):
    """The insert commits, then the connection drops (503): the client retries with its key and
    gets that job, with its input image kept."""
    store = server[1].jobs.store
    real_add = store.add_many  # every submit inserts through it (a batch or one job)

    def add_then_drop(*args, **kwargs):
        real_add(*args, **kwargs)
        raise StoreUnavailable("connection lost after commit")

    monkeypatch.setattr(store, "add_many", add_then_drop)
    key = {"Idempotency-Key": "retry-after-503"}
    dropped = post(client, headers=key, seed=9)
    assert dropped.status_code == 503 and dropped.headers["retry-after"]
    monkeypatch.setattr(store, "add_many", real_add)
    retry = post(client, headers=key, seed=9)
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    job = store.get(retry.json()["request_id"])
    assert job.payload["seed"] == 9 and server[1].jobs.storage.read_bytes(job.input_path)[:4] == b"\x89PNG"
    cancel(client, job.request_id)


def test_rate_limit_answers_429_with_headers(engine, tmp_path):
    settings = api_settings(tmp_path, submits_per_min=2)
    with (
        serve(settings, engine, run_worker=False) as (url, _service, _worker),
        httpx.Client(base_url=url) as c,
    ):
        answers = [post(c) for _ in range(3)]
        other = post(c, key=KEY_B)
    assert [r.status_code for r in answers] == [200, 200, 429] and other.status_code == 200
    assert [r.headers["ratelimit-remaining"] for r in answers] == ["1", "0", "0"]
    limited = answers[2]
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60 and limited.headers["ratelimit-limit"] == "2"
    assert limited.headers["ratelimit-policy"] == "2;w=60" and int(limited.headers["ratelimit-reset"]) <= 60


class Gate:
    """Holds every generation at its first denoising step until the test lets that one go."""

    def __init__(self, monkeypatch):
        import wan_demo.generate as gen

        self.reached: queue.Queue[threading.Event] = queue.Queue()
        real = gen.run_segment

        def run_segment(engine, *, on_step, **kwargs):
            go = threading.Event()

            def step(i: int) -> None:
                if i == 0 and not go.is_set():  # held before the step's callback: a cancel sent
                    self.reached.put(go)  # meanwhile stops the run there (no VAE decode)
                    go.wait(60)
                on_step(i)

            return real(engine, on_step=step, **kwargs)

        monkeypatch.setattr(gen, "run_segment", run_segment)

    def next(self) -> threading.Event:
        return self.reached.get(timeout=60)


def queued_positions(client) -> dict[str, int]:
    found = {}
    for key in (KEY_A, KEY_B):
        listing = client.get(f"{BASE}/requests", params={"status": "queued", "limit": 100}, headers=auth(key))
        found.update({r["request_id"]: r["queue_position"] for r in listing.json()["requests"]})
    return found


def test_key_b_first_job_runs_second_behind_key_a_backlog(client, server, monkeypatch):
    """A's 10 jobs, then B's 1: B's runs second. Each job is held at its first denoising step while
    the positions of the queued ones are read; then every held job but B's is cancelled there (no
    VAE decode: the check stays fast) and B's runs to the end."""
    gate = Gate(monkeypatch)
    a = [post(client, prompt=f"a{i}").json()["request_id"] for i in range(10)]
    held = gate.next()  # A's first job is running
    b = post(client, key=KEY_B, prompt="b0").json()["request_id"]
    expected, started = [a[0], b, *a[1:]], [a[0]]
    while True:
        # while one job is held the queue stands still: its positions must be the order still to come
        positions = queued_positions(client)
        still = [rid for rid in expected if rid not in started]
        assert sorted(positions, key=positions.get) == still, (len(started), positions)
        assert sorted(positions.values()) == list(range(1, len(still) + 1)), positions
        running = client.get(
            f"{BASE}/requests/{started[-1]}", headers=auth(KEY_B if started[-1] == b else KEY_A)
        )
        assert (running.json()["status"], running.json()["queue_position"]) == ("processing", 0)
        if started[-1] != b:
            assert client.post(f"{BASE}/requests/{started[-1]}/cancel", headers=auth()).status_code == 200
        held.set()
        if not still:
            break
        held = gate.next()
        started.append(server[1].jobs.store.running()[0].request_id)
    assert started == expected  # B's only job ran second
    final = {rid: wait_status(client, f"{BASE}/requests/{rid}", DONE, key=KEY_A)["status"] for rid in a}
    assert wait_status(client, f"{BASE}/requests/{b}", DONE, key=KEY_B)["status"] == "success"
    assert final == dict.fromkeys(a, "cancelled")
