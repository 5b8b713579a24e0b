"""Helpers for the REST API tests: a real HTTP server on 127.0.0.1 and request builders."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI
from PIL import Image

from wan_demo.core.settings import API_MODEL_ID, Settings
from wan_demo.jobs.common import TERMINAL
from wan_demo.jobs.service import JobService
from wan_demo.jobs.store.sqlite import SqliteJobStore
from wan_demo.jobs.worker import Worker
from wan_demo.rest import routes
from wan_demo.rest.keys import KeyRing
from wan_demo.rest.service import RestService

KEY_A, KEY_B = "key-alpha-123", "key-beta-456"
BASE = "/api/v1/apikey"


def b64_image(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def body(image_b64: str, prompt: str = "a cat walks on grass", **payload) -> dict:
    return {"model": API_MODEL_ID, "payload": {"prompt": prompt, "path_input_image": image_b64, **payload}}


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(client: httpx.Client, png: str, key: str = KEY_A, **payload) -> httpx.Response:
    """POST a generation request with `png` (base64) and the default prompt, as `key`."""
    return client.post(f"{BASE}/requests", json=body(png, **payload), headers=auth(key))


@contextmanager
def serve(settings: Settings, engine, run_worker: bool = True) -> Iterator[tuple[str, RestService, Worker]]:
    """Job queue + worker + REST routes on a plain FastAPI app behind uvicorn on a free port.
    `run_worker=False`: accepted requests stay queued (fuzzing: nothing is generated)."""
    jobs = JobService(SqliteJobStore(settings.data_dir / "requests.sqlite3"), settings, engine.plan_info)
    jobs.start()
    worker = Worker(jobs.store, engine, settings, storage=jobs.storage)
    if run_worker:
        worker.start()
        jobs.worker = worker
    app = FastAPI()
    service = RestService(jobs, settings, KeyRing.from_settings(settings)).start()
    routes.attach(app, service)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", service, worker
    finally:
        server.should_exit = True
        thread.join(10)
        service.stop()
        worker.stop()
        jobs.close()


def wait_status(
    client: httpx.Client, url: str, statuses: tuple[str, ...], key: str = KEY_A, timeout: float = 60
):
    """Poll until the request reaches one of `statuses` (bounded); returns the last JSON."""
    deadline = time.monotonic() + timeout
    while True:
        data = client.get(url, headers=auth(key)).json()
        if data["status"] in statuses or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


def api_settings(tmp, **changes) -> Settings:
    """Tiny-model settings for API tests; KEY_B is configured hashed (sha256:...) to cover both forms."""
    from wan_demo.rest.keys import digest

    base = Settings(
        model="tiny",
        device="cpu",
        tiny_max_area=64 * 64,
        steps=2,
        prompt_extender="rules",
        output_dir=tmp / "outputs",
        data_dir=tmp / "data",
        api_keys=f"{KEY_A}, sha256:{digest(KEY_B)}",
        max_file_size_mb=1,
        queue_max_size=16,
        max_active_per_key=4,
        submits_per_min=0,  # the rate limit has its own tests (tests/test_api_clients.py)
    )
    return base.replace(**changes)


@contextmanager
def paused_generation(monkeypatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold the real tiny generation after its first denoising step until `release` is set, so a
    test can observe `processing` or cancel mid-run. Yields (reached, release)."""
    import wan_demo.generate as gen

    real = gen.run_segment
    reached, release = threading.Event(), threading.Event()

    def run_segment(engine, *, on_step, **kwargs):
        def step(i: int) -> None:
            on_step(i)
            if i == 0 and not release.is_set():
                reached.set()
                release.wait(30)

        return real(engine, on_step=step, **kwargs)

    monkeypatch.setattr(gen, "run_segment", run_segment)
    try:
        yield reached, release
    finally:
        release.set()


def wait_job(jobs: JobService, job, timeout: float = 120):
    """Poll the job service until `job` is terminal (bounded); returns the finished record."""
    deadline = time.monotonic() + timeout
    while (current := jobs.get(job.request_id, job.owner)).status not in TERMINAL:
        assert time.monotonic() < deadline, f"{job.request_id} stuck in {current.status}"
        time.sleep(0.05)
    return current
