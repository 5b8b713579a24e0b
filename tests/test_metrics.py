"""Metrics, probes and drain in one process (role all, SQLite, the tiny model): /metrics scraped over
HTTP and parsed with prometheus_client's parser as jobs run; /healthz, /readyz; the metrics token;
a worker's own probe port; GPU memory gauges (with a named mock of torch.cuda: no GPU here); the
worker's drain (finish within the grace period, or hand the job back at once)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from apitools import BASE, api_settings, auth, b64_image, paused_generation, submit, wait_status
from conftest import make_image
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from bench.services import free_port
from wan_demo.jobs.common import Status
from wan_demo.jobs.metrics import Metrics, stage_seconds
from wan_demo.jobs.probes import ProbeServer
from wan_demo.jobs.service import JobService
from wan_demo.jobs.store.sqlite import SqliteJobStore
from wan_demo.jobs.worker import Worker
from wan_demo.rest import ops, routes
from wan_demo.rest.keys import KeyRing
from wan_demo.rest.service import RestService


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@contextmanager
def stack(settings, engine, start_worker: bool = True) -> Iterator[tuple[str, JobService, Worker]]:
    """What server.build + launch wire for role all, on a plain FastAPI app behind uvicorn."""
    jobs = JobService(SqliteJobStore(settings.data_dir / "q.sqlite3"), settings, engine.plan_info)
    jobs.metrics.watch_queue(jobs.queue_figures)
    jobs.start()
    worker = Worker(jobs.store, engine, settings, storage=jobs.storage, metrics=jobs.metrics)
    jobs.worker = worker
    if start_worker:
        worker.start()
    app = FastAPI()
    rest = RestService(jobs, settings, KeyRing.from_settings(settings)).start()
    routes.attach(app, rest)
    ops.attach(app, jobs, settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", jobs, worker
    finally:
        server.should_exit = True
        thread.join(10)
        rest.stop()
        worker.stop()
        jobs.close()


def test_metrics_change_as_jobs_run(tmp_path, engine):
    settings = api_settings(tmp_path, submits_per_min=3, metrics_token="scrape-token-0123")
    png = b64_image(make_image(96, 64))
    with stack(settings, engine) as (url, jobs, _), httpx.Client(base_url=url, timeout=60) as client:
        scrape = {"Authorization": "Bearer scrape-token-0123"}
        assert client.get("/metrics").status_code == 401  # the token is asked for
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        before = samples(client.get("/metrics", headers=scrape).text)
        assert value(before, "wan_demo_store_up") == 1 and value(before, "wan_demo_queue_depth") == 0
        ids = [submit(client, png).json()["request_id"] for _ in range(2)]
        for rid in ids:
            assert wait_status(client, f"{BASE}/requests/{rid}", ("success", "failed"))["status"] == "success"
        refused = [submit(client, png).status_code for _ in range(2)]  # 3 per minute: the 4th is refused
        after = samples(client.get("/metrics", headers=scrape).text)
    assert refused[-1] == 429
    mode = "quality"  # the tiny model has no fast LoRA
    assert value(after, "wan_demo_jobs_submitted_total", source="rest", speed_mode=mode) == 3
    assert value(after, "wan_demo_submits_refused_total", reason="rate_limited") == 1
    assert value(after, "wan_demo_jobs_finished_total", status="success", speed_mode=mode) >= 2
    assert value(after, "wan_demo_queue_wait_seconds_count") >= 2
    for stage in ("prompt", "encode", "denoise", "decode", "write"):
        assert value(after, "wan_demo_generation_seconds_count", stage=stage, speed_mode=mode) >= 2, stage
    denoise = value(after, "wan_demo_generation_seconds_sum", stage="denoise", speed_mode=mode)
    assert denoise > 0
    assert value(after, "wan_demo_jobs", status="success") >= 2
    assert value(after, "wan_demo_workers_alive") == 1 and value(after, "wan_demo_webhook_backlog") == 0
    assert value(after, "process_resident_memory_bytes") > 10**7
    labels = {k for (name, lab) in after for k, _ in lab if name.startswith("wan_demo")}
    assert labels <= {"source", "speed_mode", "status", "stage", "reason", "le", "code", "outcome", "result"}


def test_health_and_readiness(tmp_path, engine):
    settings = api_settings(tmp_path)
    with stack(settings, engine) as (url, jobs, worker):
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["checks"] == {"store": "ok", "storage": "ok", "worker": "idle"}
        assert body["workers_alive"] == 1 and body["draining"] is False
        assert httpx.get(f"{url}/metrics").status_code == 200  # no token configured: open
        jobs.drain.begin()
        draining = httpx.get(f"{url}/readyz")
        assert draining.status_code == 503 and draining.json()["draining"] is True
        assert httpx.get(f"{url}/healthz").status_code == 200  # alive all the same
        refused = submit(httpx.Client(base_url=url), b64_image(make_image(96, 64)))
        assert refused.status_code == 503 and refused.headers["retry-after"] == "10"
        assert refused.json()["error"]["code"] == "draining"
        assert refused.headers["x-request-id"]


def test_worker_probe_port(tmp_path, engine):
    settings = api_settings(tmp_path, metrics_port=free_port(), metrics_token="")
    token_file = tmp_path / "token"
    token_file.write_text("file-token-0123\n")
    jobs = JobService(SqliteJobStore(tmp_path / "q.sqlite3"), settings, engine.plan_info)
    jobs.start()
    probes = ProbeServer(jobs, settings.replace(metrics_token_file=str(token_file))).start()
    try:
        base = f"http://127.0.0.1:{probes.port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").json()["checks"] == {"store": "ok", "storage": "ok"}
        assert httpx.get(f"{base}/metrics").status_code == 401
        got = httpx.get(f"{base}/metrics", headers=auth("file-token-0123"))
        assert got.status_code == 200 and "process_resident_memory_bytes" in got.text
        assert httpx.get(f"{base}/nothing").status_code == 404
    finally:
        probes.stop()
        jobs.close()


def test_gpu_memory_gauges_with_a_mocked_torch_cuda(monkeypatch):
    """MOCK of torch.cuda (no GPU on this machine): the collector reports what torch.cuda says."""
    import torch

    from wan_demo.model.gpu import memory_stats

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda i: 1000 + i)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda i: 2000 + i)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda i: 3000 + i)
    metrics = Metrics()
    metrics.watch_gpu(memory_stats)
    found = samples(metrics.exposition()[0].decode())
    assert value(found, "wan_demo_gpu_memory_bytes", device="cuda:1", kind="reserved") == 2001
    assert value(found, "wan_demo_gpu_memory_bytes", device="cuda:0", kind="peak") == 3000


def test_gpu_gauges_are_empty_without_cuda():
    from wan_demo.model.gpu import memory_stats

    metrics = Metrics()
    metrics.watch_gpu(memory_stats)
    assert "wan_demo_gpu_memory_bytes{" not in metrics.exposition()[0].decode()


def test_stage_seconds_from_generate_timings():
    timings = {"plan": 0.1, "prompt": 0.4, "image": 0.2, "pipeline": 7.0, "preview": 1.0, "encode": 0.5,
               "pipeline.encode": 1.0, "pipeline.denoise": 6.0, "pipeline.decode": 1.0}  # fmt: skip
    stages = stage_seconds(timings, write_s=0.25)
    assert stages == pytest.approx(
        {"prompt": 0.5, "encode": 1.2, "denoise": 5.0, "preview": 1.0, "decode": 1.0, "write": 0.75}
    )
    assert stage_seconds({"pipeline": 3.0})["denoise"] == 3.0  # no breakdown (torchrun): all denoise


@pytest.mark.parametrize(
    "grace_s, resume_s, expect, state",
    [
        (30.0, 0.5, Status.SUCCESS, "stopped"),  # the job finishes within the grace period
        (0.2, 1.0, Status.QUEUED, "stopped"),  # it does not: handed back at its next step
        (0.2, None, Status.QUEUED, "stopped"),  # no step comes: released from outside, the run discarded
    ],
)
def test_worker_drain_finishes_or_hands_back(tmp_path, engine, monkeypatch, grace_s, resume_s, expect, state):
    """SIGTERM's worker half: the running job finishes within the grace period, or goes back to the
    queue at once (not after the lease), its claim undone; never worker_lost."""
    settings = api_settings(tmp_path, lease_s=600)
    with paused_generation(monkeypatch) as (reached, release), stack(settings, engine) as (url, jobs, worker):
        rid = submit(httpx.Client(base_url=url), b64_image(make_image(96, 64))).json()["request_id"]
        assert reached.wait(60)
        if resume_s is not None:
            threading.Timer(resume_s, release.set).start()
        t0 = time.monotonic()
        worker.drain(grace_s)
        took = time.monotonic() - t0
        row = jobs.store.get(rid)
        assert row.status == expect and row.error_code is None
        assert took < 25  # at once: far below the 600 s lease
        handed = value(samples(jobs.metrics.exposition()[0].decode()), "wan_demo_jobs_handed_back_total")
        assert handed == (1 if expect == Status.QUEUED else 0)
        if expect == Status.QUEUED:
            assert (row.claims, row.lease_until, row.preview_path) == (0, None, None)
        assert worker.state() == state


def test_operations_doc_blocks_run(tmp_path, engine, capsys):
    """docs/operations.md: its Python block runs against a live node; its YAML blocks parse."""
    import re
    from pathlib import Path

    import yaml

    doc = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    code = re.findall(r"```python\n(.*?)```", doc, flags=re.S)[0]
    settings = api_settings(tmp_path, metrics_token="doc-token-0123456")
    with stack(settings, engine) as (url, _jobs, _worker):
        exec(compile(code, "docs/operations.md", "exec"), {"BASE": url, "TOKEN": "doc-token-0123456"})  # noqa: S102
    assert "queued: 0.0 workers: 1.0" in capsys.readouterr().out
    scrape, probes = (yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", doc, flags=re.S))
    assert {c["metrics_path"] for c in scrape["scrape_configs"]} == {"/metrics"}
    assert probes["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_operations_settings_are_checked_before_start(tmp_path):
    """Declared in core/settings.py with their rules (issue 21): one check for every setting."""
    from wan_demo.core.settings import Settings, settings_problems

    assert settings_problems(Settings()) == []
    bad = Settings(log_format="xml", drain_s=-1, metrics_token_file=str(tmp_path / "missing"))
    assert [p.split()[0] for p in settings_problems(bad)] == ["drain_s", "metrics_token_file", "log_format"]
