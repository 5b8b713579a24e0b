"""The one generation worker: a single thread that owns the GPU and runs tasks in FIFO order.

The Gradio UI, the Gradio API and the REST API all submit here, so two generations never run at
once. Cancelling a queued task drops it; cancelling a running one stops it at the next step.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from wan_demo.core.request import GenerationRequest, GenerationResult, InvalidRequest, Progress
from wan_demo.core.settings import Settings
from wan_demo.core.validate import validate
from wan_demo.generate import ProgressFn, generate
from wan_demo.model.pipeline import Engine, GenerationCancelled

log = logging.getLogger(__name__)

QUEUED, PROCESSING, SUCCESS, FAILED, CANCELLED = "queued", "processing", "success", "failed", "cancelled"
TERMINAL = (SUCCESS, FAILED, CANCELLED)


class QueueFull(Exception):
    """More tasks are waiting than the configured queue size."""


@dataclass(eq=False)
class Task:
    request: GenerationRequest
    on_progress: ProgressFn | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = QUEUED
    progress: Progress = field(default_factory=lambda: Progress("queued"))
    result: GenerationResult | None = None
    error: BaseException | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def _report(self, progress: Progress) -> None:
        self.progress = progress
        if self.on_progress is not None:
            self.on_progress(progress)


class Worker:
    def __init__(self, engine: Engine, settings: Settings, run: Callable[..., GenerationResult] = generate):
        self.engine = engine
        self.settings = settings
        self.run = run  # generate(), or a wrapper with its signature (ZeroGPU runs it in a GPU call)
        self._waiting: deque[Task] = deque()
        self._cond = threading.Condition()
        self._running: Task | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="generation-worker", daemon=True)

    def start(self) -> Worker:
        self._thread.start()
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            for task in (*self._waiting, self._running):
                if task is not None:
                    task.cancel()
            self._cond.notify_all()
        self._thread.join(timeout)

    def submit(self, request: GenerationRequest, on_progress: ProgressFn | None = None) -> Task:
        """Validate now (errors reach the caller at once) and queue. Raises InvalidRequest, QueueFull."""
        task = Task(validate(request), on_progress)
        with self._cond:
            if self._closed:
                raise RuntimeError("the worker is shut down")
            if len(self._waiting) >= self.settings.queue_max_size:
                raise QueueFull(f"{len(self._waiting)} generations are waiting; try again later")
            self._waiting.append(task)
            task.progress = Progress("queued", queue_position=len(self._waiting))
            self._cond.notify_all()
        return task

    def position(self, task: Task) -> int | None:
        """1-based place among waiting tasks, 0 while running, None when finished."""
        with self._cond:
            if task is self._running:
                return 0
            try:
                return self._waiting.index(task) + 1
            except ValueError:
                return None

    @property
    def busy(self) -> bool:
        return self._running is not None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                task = self._waiting.popleft()
                self._running = task
            try:
                self._run(task)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()
                task.done.set()

    def _run(self, task: Task) -> None:
        task.started_at = time.time()
        if task.stop.is_set():
            task.status = CANCELLED
        else:
            task.status = PROCESSING
            try:
                task.result = self.run(task.request, self.engine, self.settings, task._report, task.stop)
                task.status = SUCCESS
            except GenerationCancelled:
                task.status = CANCELLED
            except InvalidRequest as e:
                task.status, task.error = FAILED, e
            except Exception as e:  # the worker must survive any single failure
                log.exception("generation %s failed", task.id)
                task.status, task.error = FAILED, e
        task.completed_at = time.time()
