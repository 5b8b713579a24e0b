"""Wire the process together: settings -> engine -> worker -> Gradio UI + REST API -> launch."""

from __future__ import annotations

import logging
import sys

from wan_demo import api, ui
from wan_demo.jobs import Worker
from wan_demo.pipeline import ModelUnavailable, load_engine
from wan_demo.settings import Settings, from_env

log = logging.getLogger(__name__)


def build(settings: Settings):
    """Load the model once, start the one worker, build the UI. Returns (demo, worker)."""
    engine = load_engine(settings)
    worker = Worker(engine, settings).start()
    demo = ui.build_ui(worker, settings)
    return demo, worker


def launch(demo, worker: Worker, settings: Settings, block: bool = True):
    """Start Gradio (the Space must start through demo.launch) and add the REST routes to its app."""
    demo.queue(api_open=False, max_size=settings.queue_max_size, default_concurrency_limit=1)
    demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        prevent_thread_lock=True,
        show_error=False,
        enable_monitoring=False,
        max_file_size=f"{settings.max_file_size_mb}mb",
    )
    api.attach(demo.app, worker, settings)
    if block:
        demo.block_thread()
    return demo


def main(argv: list[str] | None = None) -> None:
    settings = from_env(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        demo, worker = build(settings)
    except ModelUnavailable as e:
        raise SystemExit(f"error: {e}") from None
    try:
        launch(demo, worker, settings)
    finally:
        worker.shutdown()
