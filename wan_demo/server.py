"""Wire the process together: settings -> engine -> worker -> Gradio UI + REST API -> launch."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

from wan_demo.core.settings import Settings, from_env
from wan_demo.jobs.worker import Worker
from wan_demo.model import distributed
from wan_demo.model.pipeline import ModelUnavailable, load_engine
from wan_demo.rest import routes as api
from wan_demo.web import ui, zerogpu

log = logging.getLogger(__name__)


def build(settings: Settings, group: distributed.Group | None = None):
    """Load the model once, start the one worker, build the UI. Returns (demo, worker)."""
    engine = distributed.attach(load_engine(settings), group)  # no-op on one GPU
    if zerogpu.enabled():  # on ZeroGPU the GPU exists only inside a spaces.GPU call (see zerogpu.py)
        worker = Worker(engine, settings, run=zerogpu.GpuBridge(engine).run).start()
    else:
        worker = Worker(engine, settings).start()
    demo = ui.build_ui(worker, settings)
    return demo, worker


def launch(demo, worker: Worker, settings: Settings, block: bool = True):
    """Start Gradio (the Space must start through demo.launch) and add the REST routes to its app."""
    demo.queue(api_open=False, max_size=settings.queue_max_size, default_concurrency_limit=1)
    output_dir = Path(settings.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        prevent_thread_lock=True,
        show_error=False,  # gr.Error text still reaches users; tracebacks stay in the log
        enable_monitoring=False,
        max_file_size=f"{settings.max_file_size_mb}mb",
        allowed_paths=[str(output_dir)],  # results are copied from here into Gradio's cache
        mcp_server=mcp_available(),
        css=ui.CSS,
        footer_links=["api", "gradio"],
        quiet=True,
    )
    api.attach(demo.app, worker, settings)
    url = demo.local_url or f"http://{settings.host}:{settings.port}/"
    log.info("serving the UI and Gradio API at %s and the REST API at %sapi/v1/apikey/", url, url)
    log.info(worker.engine.banner)
    if block:
        demo.block_thread()
    return demo


def mcp_available() -> bool:
    """`gradio[mcp]` installed: /generate is then also an MCP tool at /gradio_api/mcp/."""
    return importlib.util.find_spec("mcp") is not None


def main(argv: list[str] | None = None) -> None:
    settings = from_env(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    group = distributed.init(settings)  # torchrun with WORLD_SIZE > 1, else None
    try:
        if group is not None and not group.is_leader:
            return distributed.run_follower(settings, group)  # ranks 1..N-1: no UI, join each segment
        demo, worker = build(settings, group)
    except ModelUnavailable as e:
        raise SystemExit(f"error: {e}") from None
    try:
        launch(demo, worker, settings)
    finally:
        worker.shutdown()
        distributed.shutdown(group)
