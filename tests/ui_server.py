"""Launch the real app (tiny model, in-process) on a free 127.0.0.1 port for UI/API tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from wan_demo.core.settings import Settings
from wan_demo.jobs.worker import Worker

APP_AREA = 64 * 64  # tiny model output budget: a 5 s clip (81 frames) takes ~1 s on CPU
# Debian's Chromium, driven through Python playwright (never `playwright install`), offline-safe flags
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]  # fmt: skip
LOAD_TIMEOUT_S = 300  # the tiny model loads in seconds; a shared CI machine can be slow
LAUNCH_CHECK_S = 90.0  # how long launch() may wait for its own URL to answer (busy machine)


@dataclass
class RunningApp:
    url: str
    worker: Worker
    settings: Settings
    demo: object
    server: object = None  # wan_demo.server.Server: the job service, the sweeper, the REST service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_settings(root: Path, **changes) -> Settings:
    return Settings(
        model="tiny", device="cpu", tiny_max_area=APP_AREA, steps=2, output_dir=root / "outputs",
        data_dir=root / "data", prompt_extender="rules", host="127.0.0.1", port=free_port(),
    ).replace(**changes)  # fmt: skip


@contextmanager
def running_app(root: Path, **changes) -> Iterator[RunningApp]:
    from wan_demo.server import build, launch

    settings = app_settings(root, **changes)
    server = build(settings)
    try:
        with patient_launch_check():
            launch(server, block=False)  # the page answers now; the model loads in the background
        assert server.loader.wait(LOAD_TIMEOUT_S).ready, server.loader.readiness()
        yield RunningApp(f"http://127.0.0.1:{settings.port}/", server.worker, settings, server.demo, server)
    finally:
        server.demo.close()
        server.stop()


@contextmanager
def patient_launch_check() -> Iterator[None]:
    """Gradio's launch() checks that its own URL answers, but gives up at the first 3 s timeout and
    then raises "When localhost is not accessible, a shareable link must be created": on a busy
    2-core machine that happens. Here the check waits for the answer itself, up to LAUNCH_CHECK_S."""
    from gradio import networking

    real = networking.url_ok

    def patient(url: str) -> bool:
        deadline = time.monotonic() + LAUNCH_CHECK_S
        while not real(url):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)  # poll interval (a refused connection returns at once)
        return True

    with mock.patch.object(networking, "url_ok", patient):
        yield
