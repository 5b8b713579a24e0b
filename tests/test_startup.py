"""Start-up: the page and REST answer while the model loads, submits queue and then run, the banner
and GET /models/{id} show the load's progress, a failed load is shown with its reason.

The app is the real one (server.build + launch, tiny model, 127.0.0.1). To look at it mid-load, the
model's load is held at a gate the test opens (`gated`): the real load_engine runs after it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from apitools import BASE, KEY_A, auth, b64_image, body, wait_status
from conftest import make_image
from ui_server import CHROMIUM, LOAD_TIMEOUT_S, app_settings

from wan_demo import server as server_module
from wan_demo.core.settings import API_MODEL_ID, Settings
from wan_demo.jobs.loading import FAILED, LOADING, READY, LoadFailed
from wan_demo.model.engine import STAGES, expected_info, load_engine
from wan_demo.web import ui

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def launched(root: Path, gate: threading.Event | None = None, **changes) -> Iterator:
    """The app launched as `python app.py` would (the page first, the model in the background)."""
    settings = app_settings(root, api_keys=KEY_A, **changes)
    real = server_module.load_engine

    def gated(s: Settings, on_progress):
        on_progress("held by the test", 0.0)
        assert gate.wait(LOAD_TIMEOUT_S)
        return real(s, on_progress=on_progress)

    with pytest.MonkeyPatch.context() as patch:
        if gate is not None:
            patch.setattr(server_module, "load_engine", gated)
        server = server_module.build(settings)
        try:
            server_module.launch(server, block=False)
            yield server, httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30)
        finally:
            if gate is not None:
                gate.set()
            server.loader.wait(LOAD_TIMEOUT_S)
            server.demo.close()
            server.stop()


def docs_status_snippet(port: int) -> dict:
    """docs/speed.md's curl block (after `<!-- speed-model-status -->`) with this app's port."""
    text = (ROOT / "docs" / "speed.md").read_text()
    code = re.search(r"<!-- speed-model-status -->\s*```bash\n(.*?)```", text, re.S).group(1)
    code = code.replace("127.0.0.1:7860", f"127.0.0.1:{port}")
    env = {**os.environ, "KEY": KEY_A}
    run = subprocess.run(
        ["bash", "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(run.stdout)


def model_status(client: httpx.Client) -> dict:
    response = client.get(f"{BASE}/models/{API_MODEL_ID}", headers=auth())
    assert response.status_code == 200
    return response.json()["status"]


def test_page_and_rest_answer_while_loading_then_queued_jobs_run(tmp_path):
    gate = threading.Event()
    with launched(tmp_path, gate) as (server, client):
        assert client.get("/").status_code == 200  # the page, before the model exists
        assert server.worker is None
        status = model_status(client)
        assert status["state"] == LOADING and status["stage"] == "held by the test" and status["reason"] == ""
        assert docs_status_snippet(server.settings.port)["state"] == LOADING  # docs/speed.md, run as written
        text, classes = ui._banner_now(server.jobs)[0].value, ui._banner_now(server.jobs)[0].elem_classes
        assert "The model is loading (held by the test, 0%" in text and classes == ["loading"]
        assert ui.LOADING_NOTE in text
        probe = client.get("/readyz")  # issue 25's probe: not ready while the model loads, and why
        assert probe.status_code == 503 and probe.json()["model"]["state"] == LOADING
        assert probe.json()["checks"]["model"].startswith("loading model (held by the test, 0%")

        submitted = client.post(f"{BASE}/requests", json=body(b64_image(make_image())), headers=auth())
        assert submitted.status_code == 200 and submitted.json()["status"] == "queued"
        url = f"{BASE}/requests/{submitted.json()['request_id']}"
        assert client.get(url, headers=auth()).json()["status"] == "queued"  # waits for the model

        gate.set()
        assert server.loader.wait(LOAD_TIMEOUT_S).state == READY
        done = wait_status(client, url, ("success", "failed"), timeout=120)
        assert done["status"] == "success", done
        status = model_status(client)
        assert status["state"] == READY and status["progress"] == 1.0
        text = ui._banner_now(server.jobs)[0].value
        assert "TINY model" in text and "memory:" in text
        probe = client.get("/readyz")
        assert probe.status_code == 200 and probe.json()["checks"]["model"] == "ok", probe.json()


def test_progress_names_each_stage_of_load_engine(tmp_path):
    seen: list[tuple[str, float]] = []
    settings = Settings(model="tiny", device="cpu", tiny_max_area=64 * 64, output_dir=tmp_path)
    load_engine(settings, on_progress=lambda stage, fraction: seen.append((stage, fraction)))
    assert [stage for stage, _ in seen] == list(STAGES)
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] < 1.0


def test_a_failed_load_is_shown_with_its_reason(tmp_path):
    missing = tmp_path / "no-such-model"
    with launched(tmp_path, model=str(missing), offline=True) as (server, client):
        state = server.loader.wait(LOAD_TIMEOUT_S)
        assert state.state == FAILED and str(missing) in state.reason
        assert client.get("/").status_code == 200  # the page stays up to say so
        status = model_status(client)
        assert status["state"] == FAILED and str(missing) in status["reason"]
        refused = client.post(f"{BASE}/requests", json=body(b64_image(make_image())), headers=auth())
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "model_unavailable" and str(missing) in error["message"]
        banner = ui._banner_now(server.jobs)
        assert str(missing) in banner[0].value and banner[0].elem_classes == ["failed"]
        assert banner[1].active is False  # no more polling once the load is over
        probe = client.get("/readyz")
        check = probe.json()["checks"]["model"]
        assert probe.status_code == 503 and check.startswith("model failed to load: ")
        assert str(missing) in check
        assert probe.json()["model"]["state"] == FAILED and "worker" not in probe.json()["checks"]


def test_a_worker_nodes_probe_says_loading_model_until_it_is_loaded(tmp_path):
    """A worker node loads before it works; its own /readyz (Settings.metrics_port) answers
    meanwhile: 503 "loading model (...)", then 200 once the model is loaded and the worker runs."""
    from ui_server import free_port

    gate = threading.Event()
    settings = app_settings(tmp_path, role="worker", metrics_port=free_port())
    real = server_module.load_engine

    def gated(s: Settings, on_progress):
        on_progress("held by the test", 0.0)
        assert gate.wait(LOAD_TIMEOUT_S)
        return real(s, on_progress=on_progress)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(server_module, "load_engine", gated)
        server = server_module.build(settings)
        launching = threading.Thread(target=server_module.launch, args=(server,), kwargs={"block": False})
        try:
            launching.start()
            probes = httpx.Client(base_url=f"http://127.0.0.1:{settings.metrics_port}", timeout=30)
            probe = _when(lambda: probes.get("/readyz"), lambda r: r.json().get("model"))
            assert probe.status_code == 503 and not probe.json()["ready"]
            assert probe.json()["checks"]["model"].startswith("loading model (held by the test, 0%")
            assert probes.get("/healthz").status_code == 200  # alive: do not restart a slow load
            gate.set()
            launching.join(LOAD_TIMEOUT_S)
            probe = probes.get("/readyz")
            assert probe.status_code == 200 and probe.json()["checks"]["model"] == "ok", probe.json()
        finally:
            gate.set()
            launching.join(LOAD_TIMEOUT_S)
            server.stop()


def _when(call, done, timeout_s: float = 30.0):
    """`call()` again until `done(result)` (the probe port opens once the store is open)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = call()
            if done(result) or time.monotonic() > deadline:
                return result
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_a_worker_node_that_cannot_load_stops_with_the_reason(tmp_path):
    settings = app_settings(tmp_path, role="worker", model=str(tmp_path / "gone"), offline=True)
    server = server_module.build(settings)
    try:
        with pytest.raises(LoadFailed, match="gone"):
            server_module.launch(server, block=False)
    finally:
        server.stop()


def test_expected_info_needs_no_torch():
    tiny = expected_info(Settings(model="tiny", tiny_max_area=4096, lora="x.safetensors"))
    assert tiny.is_tiny and tiny.max_area == 4096 and tiny.fast_available
    real = expected_info(Settings(model="some/repo", device="cuda"))
    assert not real.is_tiny and real.max_area == 480 * 832 and not real.fast_available
    assert expected_info(Settings(model="auto", device="cpu")).is_tiny


def test_building_the_page_imports_no_torch(tmp_path):
    """The page must not wait for torch and diffusers (seconds): they load with the model. Importing
    the server, building the whole page (the LoRA rows included), the rows' refresh at page load
    while the LoRA folder is empty, and a clean-up run (the sweeper starts before the page is built,
    on every role) import neither."""
    code = (
        "import sys; from wan_demo import server; from wan_demo.core.settings import Settings\n"
        "from wan_demo.web.lora_panel import LoraPanel\n"
        f"s = server.build(Settings(model='tiny', device='cpu', output_dir={str(tmp_path / 'out')!r},"
        f" data_dir={str(tmp_path / 'data')!r}, lora_dir={str(tmp_path / 'loras')!r})).start()\n"
        "server.ui.build_ui(s.jobs, s.jobs.engine_info(), s.settings); s.sweeper.run_once()\n"
        "print(LoraPanel(s.jobs).refresh()[-1]); s.stop()\n"
        "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    *_, listing, imported = out.stdout.strip().splitlines()
    assert imported == "[]" and "holds no .safetensors files yet" in listing


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Debian chromium at {CHROMIUM}")
def test_the_open_page_follows_the_load_without_a_reload(tmp_path):
    """Headless Chromium: the banner says the model is loading, then (its timer polling) shows the
    loaded model in place, in the same page."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_browser import CHROMIUM_ARGS

    gate = threading.Event()
    with launched(tmp_path, gate) as (server, _), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(LOAD_TIMEOUT_S * 1000)
        page.goto(f"http://127.0.0.1:{server.settings.port}/")
        page.wait_for_selector("#banner:has-text('The model is loading')")
        gate.set()
        page.wait_for_selector("#banner:has-text('TINY model')")
        assert "loading" not in page.inner_text("#banner")
        browser.close()


def test_a_stop_during_the_load_starts_no_worker():
    """The server stopped (its store closed) while the model loaded: the loader must not start a
    worker on it afterwards."""
    from wan_demo.jobs.loading import ModelLoader

    gate, started = threading.Event(), []

    def load(progress):
        progress("loading the weights", 0.25)
        gate.wait(10)
        return object()

    loader = ModelLoader(load, started.append, expected_info(Settings(model="tiny"))).start()
    assert loader.readiness().stage in ("starting", "loading the weights")
    loader.stop()
    gate.set()
    loader.wait(10)
    assert started == [] and loader.worker is None and loader.readiness().state == FAILED
    assert loader.engine_info().is_tiny  # still the expected model's description
