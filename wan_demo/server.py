"""Wire the process together by role: settings -> engine -> job queue + worker -> Gradio UI + REST.

- `all` (default): everything in one process, as on one GPU machine or a Space.
- `api`: the UI, the Gradio API and REST, no model; workers elsewhere run the jobs (docs/scale-out.md).
- `worker`: the model and the worker loop, no HTTP; a torchrun group is one worker (rank 0 claims).

Building opens nothing; `Server.start()` opens the job store and storage and starts the clean-up
sweeper (every role owns storage: each runs one; a database lock lets one sweep at a time); `launch()`
serves the page and REST at once and loads the model in the background (jobs/loading.py), then starts
the worker.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from wan_demo.core.cli import SettingsError
from wan_demo.core.settings import Settings, from_cli, settings_problems
from wan_demo.jobs import logs
from wan_demo.jobs.cleanup import Sweeper
from wan_demo.jobs.common import StoreUnavailable
from wan_demo.jobs.loading import LoadFailed, ModelLoader
from wan_demo.jobs.metrics import Metrics
from wan_demo.jobs.probes import ProbeServer
from wan_demo.jobs.service import JobService
from wan_demo.jobs.storage.base import make_storage
from wan_demo.jobs.store.base import make_store
from wan_demo.jobs.worker import output_dir
from wan_demo.model import distributed
from wan_demo.model.engine import ModelUnavailable, expected_info, load_engine
from wan_demo.rest import ops, routes
from wan_demo.rest.keys import KeyRing
from wan_demo.rest.service import RestService
from wan_demo.web import api_compat, ui, zerogpu

log = logging.getLogger(__name__)


@dataclass
class Server:
    settings: Settings
    jobs: JobService
    loader: ModelLoader | None  # None on an API node (no model in this process)
    rest: RestService | None  # None on a worker node
    sweeper: Sweeper  # expired outputs, inputs, rows and keys, on its own timer (jobs/cleanup.py)
    demo: Any = None  # gradio.Blocks, built by launch() once the store is open (API nodes read workers)
    probes: ProbeServer | None = None  # Settings.metrics_port: /metrics, /healthz, /readyz of its own

    @property
    def worker(self) -> Any:
        """The Worker, once the model has loaded (None before, and on an API node)."""
        return self.loader.worker if self.loader is not None else None

    def start(self) -> Server:
        self.jobs.start()
        self.sweeper.start()
        if self.rest is not None:  # webhook deliverers run where REST runs (they hold keys and views)
            self.rest.start()
        if self.settings.metrics_port:
            self.probes = ProbeServer(self.jobs, self.settings).start()
        return self

    def drain(self) -> None:
        """Graceful stop (SIGTERM): refuse new submits and fail /readyz, let the running job finish
        within Settings.drain_s (else hand it back to the queue), let in-flight requests end."""
        log.info("draining: no new submits; up to %g s for the running job and in-flight requests",
                 self.settings.drain_s)  # fmt: skip
        started = time.monotonic()
        self.jobs.drain.begin()
        if self.worker is not None:
            self.worker.drain(self.settings.drain_s)
        if not self.jobs.drain.wait_idle(self.settings.drain_s):
            log.warning("drain: %d requests still in flight; stopping anyway", self.jobs.drain.in_flight)
        if self.demo is not None:
            self.demo.close()
        log.info("drained in %.1f s", time.monotonic() - started)

    def stop(self) -> None:
        self.sweeper.stop()
        if self.probes is not None:
            self.probes.stop()
        if self.rest is not None:
            self.rest.stop()
        if self.loader is not None:
            self.loader.stop()
        self.jobs.close()


def build(settings: Settings, group: distributed.Group | None = None) -> Server:
    """The queue, the REST service and the model loader; nothing is opened or loaded yet (launch)."""
    store, storage = make_store(settings), make_storage(settings)
    loader = None
    if settings.role != "api":

        def load(progress) -> Any:
            return distributed.attach(load_engine(settings, on_progress=progress), group)

        def start_worker(engine) -> Any:
            from wan_demo.jobs.worker import Worker  # imports torch: only once a model exists
            from wan_demo.model.gpu import memory_stats

            if engine.loras is not None:  # LoRA checks against the loaded transformer; one digest cache
                jobs.loras = engine.loras.library
            # On ZeroGPU the GPU exists only inside a spaces.GPU call (see web/zerogpu.py)
            run = zerogpu.GpuBridge(engine).run if zerogpu.enabled() else None
            jobs.worker = Worker(store, engine, settings, run, storage=storage, metrics=jobs.metrics).start()
            jobs.metrics.watch_gpu(memory_stats)
            return jobs.worker

        loader = ModelLoader(load, start_worker, expected_info(settings))
    jobs = JobService(store, settings, loader.engine_info if loader else None, storage, Metrics())
    jobs.loader = loader
    if settings.role != "worker":  # queue gauges where HTTP is served (not once per worker)
        jobs.metrics.watch_queue(jobs.queue_figures)
    rest = None if settings.role == "worker" else RestService(jobs, settings, KeyRing.from_settings(settings))
    return Server(settings, jobs, loader, rest, Sweeper(store, storage, settings))


def launch(server: Server, block: bool = True):
    """Start the queue, then Gradio (a Space must start through demo.launch), add the REST routes to
    Gradio's app, then load the model in the background: the page and REST answer while it loads
    (submits queue; the banner and GET /models/{id} show the progress). A worker node, and ZeroGPU
    (its GPU functions must exist before the app starts), load first; a failure raises LoadFailed."""
    settings = server.settings
    server.start()
    background = server.loader is not None and server.rest is not None and not zerogpu.enabled()
    if server.loader is not None and not background and not (state := server.loader.run()).ready:
        raise LoadFailed(state.reason)
    if server.rest is None:
        log.info("worker %s: %s", server.worker.worker_id, server.jobs.engine_info().banner)
        if block:
            wait_for_signal()
            server.drain()
        return None
    server.demo = demo = ui.build_ui(server.jobs, server.jobs.engine_info(), settings)
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
    ops.attach(demo.app, server.jobs, settings)  # /metrics, /healthz, /readyz
    if settings.log_format == "json":
        logs.adopt_uvicorn()
    api_compat.keep_legacy_calls(demo.app)  # raw-HTTP callers sending the 10 values of before issue 24
    url = demo.local_url or f"http://{settings.host}:{settings.port}/"
    log.info("serving the UI and Gradio API at %s and the REST API at %sapi/v1/apikey/", url, url)
    if background:
        server.loader.start()
    log.info("%s (role %s)", server.jobs.engine_info().banner, settings.role)
    if block:
        wait_for_signal()  # SIGTERM / SIGINT (Ctrl-C)
        server.drain()
    return demo


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT; the caller then drains (Server.drain)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def mcp_available() -> bool:
    """`gradio[mcp]` installed: /generate is then also an MCP tool at /gradio_api/mcp/."""
    return importlib.util.find_spec("mcp") is not None


def main(argv: list[str] | None = None) -> None:
    """Read the settings from the environment and `argv` (default sys.argv), then run."""
    run(from_cli(argv))


def run(settings: Settings) -> None:
    """Serve until stopped (app.py read and checked `settings` before importing this module)."""
    if problems := settings_problems(settings):  # a Settings built in code was never checked
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        raise SettingsError(problems)
    logs.configure(settings.log_format)
    group = distributed.init(settings) if settings.role != "api" else None  # torchrun WORLD_SIZE > 1
    try:
        if group is not None and not group.is_leader:
            return distributed.run_follower(settings, group)  # ranks 1..N-1: no UI, join each segment
        server = build(settings, group)
    except (ModelUnavailable, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    try:
        launch(server)
    except (StoreUnavailable, LoadFailed) as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        started = time.monotonic()
        server.stop()
        distributed.shutdown(group)
        log.info("stopped in %.1f s", time.monotonic() - started)
