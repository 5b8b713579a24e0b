"""Wire the process together: settings -> engine -> job queue + worker -> Gradio UI + REST -> launch.

Building opens nothing; `Server.start()` opens the job store and starts the worker thread.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_demo.core.settings import Settings, from_env
from wan_demo.jobs.service import JobService
from wan_demo.jobs.store_sqlite import SqliteJobStore
from wan_demo.jobs.worker import Worker, output_dir
from wan_demo.model import distributed
from wan_demo.model.engine import ModelUnavailable, load_engine
from wan_demo.rest import routes
from wan_demo.rest.keys import KeyRing
from wan_demo.rest.service import RestService
from wan_demo.web import ui, zerogpu

log = logging.getLogger(__name__)
STORE_FILE = "requests.sqlite3"  # in Settings.data_dir


@dataclass
class Server:
    settings: Settings
    jobs: JobService
    worker: Worker
    rest: RestService
    demo: Any  # gradio.Blocks

    def start(self) -> Server:
        self.jobs.start()
        self.worker.start()
        return self

    def stop(self) -> None:
        self.worker.stop()
        self.jobs.close()


def build(settings: Settings, group: distributed.Group | None = None) -> Server:
    """Load the model once and build the queue, the worker, the UI and the REST service."""
    engine = distributed.attach(load_engine(settings), group)  # no-op on one GPU
    jobs = JobService(SqliteJobStore(Path(settings.data_dir) / STORE_FILE), settings, engine.plan_info)
    # On ZeroGPU the GPU exists only inside a spaces.GPU call (see web/zerogpu.py)
    run = zerogpu.GpuBridge(engine).run if zerogpu.enabled() else None
    worker = Worker(jobs.store, engine, settings, run)
    jobs.worker = worker
    rest = RestService(jobs, settings, KeyRing.from_settings(settings))
    return Server(settings, jobs, worker, rest, ui.build_ui(jobs, engine.plan_info(), settings))


def launch(server: Server, block: bool = True):
    """Start the queue and the worker, then Gradio (a Space must start through demo.launch), then
    add the REST routes to Gradio's app."""
    settings, demo = server.settings, server.demo
    server.start()
    demo.queue(api_open=False, max_size=settings.queue_max_size, default_concurrency_limit=1)
    ui_outputs = output_dir(settings, "ui").resolve()  # REST outputs live beside it, never served here
    ui_outputs.mkdir(parents=True, exist_ok=True)
    demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        prevent_thread_lock=True,
        show_error=False,  # gr.Error text still reaches users; tracebacks stay in the log
        enable_monitoring=False,
        max_file_size=f"{settings.max_file_size_mb}mb",
        allowed_paths=[str(ui_outputs)],  # UI results are copied from here into Gradio's cache
        mcp_server=mcp_available(),
        css=ui.CSS,
        footer_links=["api", "gradio"],
        quiet=True,
    )
    routes.attach(demo.app, server.rest)
    url = demo.local_url or f"http://{settings.host}:{settings.port}/"
    log.info("serving the UI and Gradio API at %s and the REST API at %sapi/v1/apikey/", url, url)
    log.info(server.worker.engine.banner)
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
        server = build(settings, group)
    except ModelUnavailable as e:
        raise SystemExit(f"error: {e}") from None
    try:
        launch(server)
    finally:
        server.stop()
        distributed.shutdown(group)
