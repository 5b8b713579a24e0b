"""Load the model while the page and the REST API already answer (as ComfyUI does).

`ModelLoader` runs the engine's load in a background thread and keeps its state: loading (with the
stage and a fraction from model.engine.load_engine's progress callback), ready (the Worker is then
started and jobs queued meanwhile run in order) or failed (with the reason, shown on the page and in
REST). Until it is ready, submits are planned with the model the settings ask for
(`model.engine.expected_info`) and wait in the queue; the worker re-plans each job with the real
model when it runs it. JobService.model_state() reads it (the banner, REST's GET /models/{id},
/readyz).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from wan_demo.core.plan import EngineInfo
from wan_demo.model.engine import ModelUnavailable

log = logging.getLogger(__name__)

LOADING, READY, FAILED = "loading", "ready", "failed"


class LoadFailed(Exception):
    """The model failed to load and no other worker can run a job: the reason, for users."""


@dataclass(frozen=True)
class Readiness:
    """Whether this process can run generations: its model's load state."""

    state: str  # LOADING | READY | FAILED
    stage: str = ""  # what the load does now, in words (LOADING), or what runs the jobs (READY)
    progress: float = 0.0  # 0..1: load steps done / load steps (not a time estimate)
    reason: str = ""  # why the load failed (FAILED)
    elapsed_s: float = 0.0  # seconds since the load started

    @property
    def ready(self) -> bool:
        return self.state == READY

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def message(self) -> str:
        """One line for people: the banner and the queue note."""
        if self.state == LOADING:
            return f"the model is loading ({self.stage}, {self.progress:.0%}, {self.elapsed_s:.0f} s so far)"
        if self.state == FAILED:
            return f"the model failed to load: {self.reason}"
        return self.stage or "ready"

    def check(self) -> str:
        """/readyz's "model" check: "ok", or why not in a fixed form a probe's log can match
        ("loading model (stage, n%, s so far)", "model failed to load: reason")."""
        if self.state == LOADING:
            return f"loading model ({self.stage}, {self.progress:.0%}, {self.elapsed_s:.0f} s so far)"
        if self.state == FAILED:
            return f"model failed to load: {self.reason}"
        return "ok"


class ModelLoader:
    """`load(on_progress)` returns the engine; `start_worker(engine)` starts and returns the Worker
    that runs the queue with it. `expected`: the EngineInfo submits are planned with meanwhile."""

    def __init__(
        self, load: Callable[[Callable[[str, float], None]], Any], start_worker: Callable[[Any], Any],
        expected: EngineInfo,
    ):  # fmt: skip
        self._load, self._start_worker, self.expected = load, start_worker, expected
        self._lock = threading.Lock()  # guards the state, and starting the worker against stop()
        self._stopped = False
        self._state = Readiness(LOADING, "waiting to start")
        self._started = time.monotonic()
        self.engine: Any = None
        self.worker: Any = None
        self._thread: threading.Thread | None = None

    # -- running the load
    def start(self) -> ModelLoader:
        """Load in a background thread (daemon: a stop during the load does not wait for it)."""
        self._thread = threading.Thread(target=self.run, name="model-loader", daemon=True)
        self._thread.start()
        return self

    def run(self) -> Readiness:
        """Load here and now, then start the worker; returns the final state (never raises)."""
        self._started = time.monotonic()
        self._progress("starting", 0.0)
        try:
            engine = self._load(self._progress)
            with self._lock:
                if self._stopped:  # the server stopped while the model loaded: no worker on a closed store
                    self._state = Readiness(FAILED, reason="the server stopped before the model loaded")
                    return self._state
                self.engine, self.worker = engine, self._start_worker(engine)
        except Exception as e:  # noqa: BLE001  # any failure is the model's state, shown to users
            reason = str(e).removeprefix("Cannot start: ") or e.__class__.__name__
            log.error("the model failed to load: %s", reason, exc_info=not _expected(e))
            self._set(Readiness(FAILED, reason=reason, elapsed_s=self._elapsed()))
        else:
            stage = f"model loaded in {self._elapsed():.1f} s"
            log.info("%s; the worker runs the queue", stage)
            self._set(Readiness(READY, stage, 1.0, elapsed_s=self._elapsed()))
        return self.readiness()

    def wait(self, timeout: float | None = None) -> Readiness:
        """Block until the load has finished (either way) or `timeout` seconds passed."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.readiness()

    def stop(self) -> None:
        """Stop the worker; a load still running ends without starting one."""
        with self._lock:
            self._stopped = True
            worker = self.worker
        if worker is not None:
            worker.stop()

    # -- what callers read
    def readiness(self) -> Readiness:
        with self._lock:
            state = self._state
        if state.state == LOADING:
            return Readiness(LOADING, state.stage, state.progress, elapsed_s=self._elapsed())
        return state

    def engine_info(self) -> EngineInfo:
        """The loaded model's (its cost model learns from each run); the expected one until then."""
        return self.engine.plan_info() if self.worker is not None else self.expected

    # -- internals
    def _progress(self, stage: str, fraction: float) -> None:
        self._set(Readiness(LOADING, stage, round(min(max(fraction, 0.0), 1.0), 3)))
        log.info("loading the model: %s (%.0f%%)", stage, fraction * 100)

    def _set(self, state: Readiness) -> None:
        with self._lock:
            self._state = state

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._started, 1)


def _expected(error: Exception) -> bool:
    """Failures with a message for users (bad folder, missing weights, bad settings): no traceback."""
    return isinstance(error, ModelUnavailable | ValueError | OSError)
