"""The bridge from the REST store to the one generation Worker shared with the UI.

One dispatcher thread takes the oldest queued request from the store, submits it to the Worker (one
REST job in the worker at a time), mirrors progress into the store and records the outcome. The
store stays the source of truth: a crash at any point leaves a row that `store.recover` repairs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

from wan_demo.core.request import GenerationRequest, InvalidRequest, Progress
from wan_demo.jobs.store_sqlite import CANCELLED, FAILED, SUCCESS, RequestStore, StoredRequest
from wan_demo.jobs.worker import CANCELLED as TASK_CANCELLED
from wan_demo.jobs.worker import SUCCESS as TASK_SUCCESS
from wan_demo.jobs.worker import QueueFull, Task, Worker
from wan_demo.media.image import decode_image

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often the dispatcher re-checks the store and the running task
PROGRESS_EVERY_S = 0.5  # progress writes are fsynced commits: at most this often per request
RETRY_FULL_S = 1.0  # wait when the worker's queue is full of UI jobs


def progress_percent(progress: Progress) -> int:
    """0-100 for the store. Denoising is 2..97 %; encoding 98 %; only success reports 100 %."""
    if progress.stage == "denoise":
        return 2 + int(95 * progress.fraction)
    return {"queued": 0, "prompt": 1, "image": 2, "decode": 97, "encode": 98, "done": 99}.get(
        progress.stage, 0
    )


class Dispatcher:
    def __init__(self, store: RequestStore, worker: Worker):
        self.store = store
        self.worker = worker
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._current: tuple[str, Task] | None = None
        self._thread = threading.Thread(target=self._loop, name="rest-dispatcher", daemon=True)

    def start(self) -> Dispatcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        """A request was queued: look now instead of at the next poll."""
        self._wake.set()

    def cancel(self, request_id: str) -> None:
        """Stop the running request at its next denoising step (the store already says so)."""
        current = self._current
        if current is not None and current[0] == request_id:
            current[1].cancel()

    def worker_position(self, request_id: str) -> int | None:
        current = self._current
        if current is None or current[0] != request_id:
            return None
        return self.worker.position(current[1])

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                rec = self.store.claim_next(self.worker_id)
            except Exception:
                log.exception("store unavailable; retrying")
                rec = None
            if rec is None:
                self._wake.wait(POLL_S)
                continue
            try:
                self._run(rec)
            except Exception:  # never let one request kill the dispatcher
                log.exception("dispatching %s failed", rec.request_id)
                self.store.finish(
                    rec.request_id, FAILED, error_code="internal", error_message="dispatch failed"
                )
            finally:
                self._current = None

    def _run(self, rec: StoredRequest) -> None:
        try:
            request = self._request_of(rec)
        except (InvalidRequest, OSError) as e:
            self.store.finish(rec.request_id, FAILED, error_code="invalid_input", error_message=str(e))
            return
        task = self._submit(rec, request)
        if task is None:
            return
        self._current = (rec.request_id, task)
        while not task.wait(POLL_S):
            latest = self.store.get(rec.request_id)
            if self._stopping.is_set() or latest is None or latest.cancel_requested:
                task.cancel()
        self._record(rec, task)

    def _request_of(self, rec: StoredRequest) -> GenerationRequest:
        p = rec.payload
        image = decode_image(Path(rec.input_path).read_bytes(), "payload.path_input_image")
        return GenerationRequest(
            image=image,
            prompt=p["prompt"],
            video_length_s=p["video_length"],
            seed=p["seed"],
            prompt_extend=p["prompt_extend"],
        )

    def _submit(self, rec: StoredRequest, request: GenerationRequest) -> Task | None:
        last = [0.0]

        def on_progress(progress: Progress) -> None:
            now = time.monotonic()
            first = progress.stage == "prompt"  # the worker started this task
            if first or progress.stage != "denoise" or now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                self.store.set_progress(rec.request_id, progress_percent(progress), started=first)

        while not self._stopping.is_set():
            try:
                return self.worker.submit(request, on_progress)
            except QueueFull:
                time.sleep(RETRY_FULL_S)  # the UI filled the worker's queue; ours stays claimed
            except InvalidRequest as e:
                self.store.finish(rec.request_id, FAILED, error_code="invalid_input", error_message=str(e))
                return None
            except RuntimeError:  # the worker is shut down
                break
        self.store.release(rec.request_id)
        return None

    def _record(self, rec: StoredRequest, task: Task) -> None:
        latest = self.store.get(rec.request_id)
        user_cancel = latest is not None and latest.cancel_requested
        if task.status == TASK_SUCCESS and task.result is not None:
            r = task.result
            self.store.finish(
                rec.request_id,
                SUCCESS,
                video_path=str(r.video_path),
                thumbnail_path=str(r.thumbnail_path),
                final_prompt=r.final_prompt,
                seed_used=r.seed_used,
            )
        elif task.status == TASK_CANCELLED and user_cancel:
            self.store.finish(rec.request_id, CANCELLED)
        elif task.status == TASK_CANCELLED:  # stopped by a server shutdown, not by the user: run it later
            self.store.release(rec.request_id)
        else:
            code = "invalid_input" if isinstance(task.error, InvalidRequest) else "generation_failed"
            message = str(task.error)[:500] if task.error else "generation failed"
            self.store.finish(rec.request_id, FAILED, error_code=code, error_message=message)
