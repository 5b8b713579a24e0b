"""Readiness and graceful drain of one process (what /healthz, /readyz and SIGTERM use).

- `readiness(jobs)`: the job store answers, the storage is usable, this process is not draining,
  its model has loaded (a process that loads one: not while it loads or after it failed; the
  "model" field has the state, stage, progress and reason: jobs/loading.py) and an in-process
  worker (role all / worker) is alive. How many workers are alive is a field, not
  a condition: an API node with no worker still accepts work (it waits in the queue).
- `Drain`: set on SIGTERM. From then on submits that did not arrive before it are refused
  (`Draining`, REST 503 + Retry-After), while requests that arrived earlier run to their end;
  `wait_idle` waits for those in-flight requests (counted by the REST routes' middleware).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from wan_demo.jobs.common import StoreUnavailable

RETRY_AFTER_S = 10  # what a refused submit is told while this node drains (another node answers)
# True inside a request that arrived before the drain began (set by the REST middleware)
admitted: contextvars.ContextVar[bool] = contextvars.ContextVar("admitted_before_drain", default=False)


class Draining(StoreUnavailable):
    """This node is shutting down and takes no new submits: retry (another node, or after restart)."""


class Drain:
    def __init__(self) -> None:
        self.started = threading.Event()
        self._in_flight = 0
        self._idle = threading.Condition()

    def begin(self) -> None:
        self.started.set()

    @contextmanager
    def request(self) -> Iterator[None]:
        """One HTTP request: counted while it runs; admitted if it arrived before the drain."""
        token = admitted.set(not self.started.is_set())
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()
            admitted.reset(token)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def check_submit(self) -> None:
        """Raise Draining for a submit that came after the drain began."""
        if self.started.is_set() and not admitted.get():
            raise Draining(f"this server is shutting down; retry in {RETRY_AFTER_S} s")

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no counted request runs (at most `timeout_s`); True when none does."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._in_flight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


def readiness(jobs: Any) -> dict[str, Any]:
    """`jobs`: the JobService (it calls this; importing it here would be a cycle).
    {"ready": bool, "checks": {store, storage[, model, worker]}, "workers_alive": n, "draining": bool
    [, "model": {state, stage, progress, reason, elapsed_s}]}."""
    checks: dict[str, str] = {}
    try:
        jobs.store.ping()
        checks["store"] = "ok"
    except (StoreUnavailable, RuntimeError) as e:
        checks["store"] = f"unavailable: {e}"
    try:
        jobs.storage.ping()
        checks["storage"] = "ok"
    except (OSError, RuntimeError) as e:
        checks["storage"] = f"unavailable: {e}"
    model = jobs.model_state() if jobs.loader is not None else None  # a process that loads one
    if model is not None:
        checks["model"] = model.check()  # "ok", "loading model (stage, %, s)" or "model failed to load: why"
    if jobs.worker is not None:
        checks["worker"] = jobs.worker.state()
    draining = jobs.drain.started.is_set()
    ok = all(v in ("ok", "idle", "busy") for v in checks.values()) and not draining
    out = {"ready": ok, "checks": checks, "workers_alive": jobs.workers_alive(), "draining": draining}
    return out | ({"model": model.as_dict()} if model is not None else {})
