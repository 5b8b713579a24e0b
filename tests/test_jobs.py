"""The one worker: FIFO, one generation at a time, queue cap, cancel queued and running."""

import pytest

from wan_demo.core.request import GenerationRequest, InvalidRequest
from wan_demo.jobs.worker import CANCELLED, FAILED, SUCCESS, QueueFull, Worker


@pytest.fixture
def worker(engine, settings):
    w = Worker(engine, settings.replace(queue_max_size=3)).start()
    yield w
    w.shutdown()


def test_tasks_run_one_at_a_time_in_order(worker, image):
    tasks = [worker.submit(GenerationRequest(image, f"clip {i}", seed=i)) for i in range(3)]
    for task in tasks:
        assert task.wait(120) and task.status == SUCCESS
        assert task.result.num_frames == 81 and task.result.seed_used == task.request.seed
    spans = sorted((t.started_at, t.completed_at) for t in tasks)
    assert all(
        prev_end <= next_start for (_, prev_end), (next_start, _) in zip(spans, spans[1:], strict=False)
    )
    assert [t.request.prompt for t in sorted(tasks, key=lambda t: t.started_at)] == [
        "clip 0",
        "clip 1",
        "clip 2",
    ]


def test_bad_input_is_rejected_at_submit(worker, image):
    with pytest.raises(InvalidRequest, match="prompt: must not be empty"):
        worker.submit(GenerationRequest(image, "  "))


def test_queue_full_and_cancel(worker, image, settings):
    long = GenerationRequest(image, "long", steps=100)
    running = worker.submit(long)
    while worker.position(running) != 0:
        running.wait(0.05)
    waiting = [worker.submit(GenerationRequest(image, f"w{i}")) for i in range(3)]
    with pytest.raises(QueueFull, match="3 generations are waiting"):
        worker.submit(GenerationRequest(image, "one too many"))
    waiting[0].cancel()  # queued: dropped without running
    running.cancel()  # running: stops at the next step
    assert running.wait(60) and running.status == CANCELLED and running.result is None
    assert waiting[0].wait(60) and waiting[0].status == CANCELLED
    for task in waiting[1:]:
        assert task.wait(120) and task.status == SUCCESS


def test_worker_survives_a_failing_generation(engine, settings, image):
    """`run` is the injection seam ZeroGPU uses; here it fails once like an OOM would."""
    from wan_demo.generate import generate

    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return generate(*args, **kwargs)

    worker = Worker(engine, settings, run=flaky).start()
    try:
        bad = worker.submit(GenerationRequest(image, "first"))
        good = worker.submit(GenerationRequest(image, "second"))
        assert bad.wait(60) and bad.status == FAILED and "out of memory" in str(bad.error)
        assert good.wait(120) and good.status == SUCCESS
    finally:
        worker.shutdown()
