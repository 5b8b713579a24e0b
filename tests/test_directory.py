"""API nodes hold no model: they plan with what the workers publish in the workers table."""

from __future__ import annotations

import pytest
from conftest import ask

from wan_demo.core.plan import CostModel, EngineInfo
from wan_demo.core.request import InvalidRequest
from wan_demo.jobs.directory import NO_WORKER, info_dict
from wan_demo.jobs.service import JobService
from wan_demo.jobs.store.sqlite import SqliteJobStore
from wan_demo.web.ui import _banner_now

GPU_A = EngineInfo(max_area=832 * 480, fast_available=True, cost=CostModel(5.0, 8.0, 10.0), banner="Model: A")
GPU_B = EngineInfo(
    max_area=624 * 624, fast_available=False, cost=CostModel(9.0, 8.0, 10.0), banner="Model: B"
)


@pytest.fixture
def api_node(settings):
    """A JobService as on an API node: no engine of its own."""
    jobs = JobService(
        SqliteJobStore(settings.data_dir / "r.sqlite3"), settings.replace(role="api", lease_s=5.0)
    )
    jobs.start()
    yield jobs
    jobs.close()


def fresh(jobs: JobService) -> EngineInfo:
    jobs.directory._cached = (0.0, [])  # skip the 2 s cache
    return jobs.engine_info()


def test_no_worker_yet_submits_still_queue(api_node, image):
    assert fresh(api_node).banner == NO_WORKER and api_node.workers_alive() == 0
    job = api_node.submit(ask(image, "waits"), "ui", "ui")
    assert api_node.store.get(job.request_id).status == "queued"
    assert "no worker is running" in _banner_now(api_node)[0].value.lower()


def test_workers_published_info_plans_the_submit(api_node, image):
    api_node.store.beat_worker("gpu-a", info_dict(GPU_A))
    info = fresh(api_node)
    assert info.fast_available and info.banner == "Model: A | 1 worker" and api_node.workers_alive() == 1
    api_node.submit(ask(image, "fast", speed_mode="fast"), "ui", "ui")
    api_node.store.beat_worker("gpu-b", info_dict(GPU_B))
    info = fresh(api_node)  # two workers: what both can run, priced at the slower
    assert (info.max_area, info.fast_available, info.cost.forward_s) == (624 * 624, False, 9.0)
    models, count = info.banner.split(" | ")
    assert sorted(models.split(" / ")) == ["Model: A", "Model: B"] and count == "2 workers"
    with pytest.raises(InvalidRequest, match="'fast' needs the step-distilled LoRA"):
        api_node.submit(ask(image, "fast", speed_mode="fast"), "ui", "ui")


def test_a_silent_worker_is_not_alive_but_still_describes_the_model(api_node):
    api_node.store.beat_worker("gpu-a", info_dict(GPU_A))
    api_node.store._db.execute("UPDATE workers SET seen_at = seen_at - 60")  # beyond one lease (5 s)
    info = fresh(api_node)
    assert api_node.workers_alive() == 0 and info.fast_available
    assert info.banner.startswith(NO_WORKER) and "Model: A" in info.banner
