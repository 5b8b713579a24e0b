"""Day-two operations against real processes: two API nodes and two workers (`python app.py`, tiny
model, JSON logs) on a PostgreSQL server started here and an S3 endpoint (moto's server mode).

In order, sharing the processes (each start costs seconds to minutes on a busy machine): metrics
change as jobs run (scraped over HTTP, parsed with prometheus_client's parser); two API nodes with
a limit of 5 per minute accept 5 in total from one key; readiness turns false while PostgreSQL is
stopped and true after; SIGTERM on a busy worker with a short grace period hands its job back at
once (the other worker runs it), with a long one lets it finish; SIGTERM on an API node refuses new
submits with 503 + Retry-After, answers the request in flight, exits 0; the logs hold neither the
prompt nor a key. Figures are printed (run with -s).
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from apitools import b64_image, body
from cluster import KEYS, Cluster, auth
from conftest import make_image
from prometheus_client.parser import text_string_to_metric_families

from bench.services import TempPostgres, free_port, postgres_bin, temp_s3

pytestmark = pytest.mark.system  # a cluster of processes, SIGTERMed and restarted

BASE = "/api/v1/apikey"
LEASE_S = 8.0
PROMPT = "a zebra-crossing-7431 under neon rain"  # must never reach a log line
TOKEN = "scrape-secret-4242"  # the metrics token (env only)
LONG = {"num_inference_steps": 100, "video_length": 10}  # 200 tiny steps: seconds of denoising
TERMINAL = {"success", "failed", "cancelled"}


@pytest.fixture(scope="module")
def pg(request):
    if postgres_bin() is None:
        request.getfixturevalue("postgres")  # skips, or fails in CI, with the install hint
    server = TempPostgres().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ops(pg, tmp_path_factory):
    with temp_s3("wan-demo") as s3_env:
        c = Cluster(tmp_path_factory.mktemp("ops"), pg.url, s3_env, free_port(), LEASE_S)
        common = {"WAN_DEMO_LOG_FORMAT": "json", "WAN_DEMO_METRICS_TOKEN": TOKEN}
        api = {"WAN_DEMO_SUBMITS_PER_MIN": "5", "WAN_DEMO_DRAIN_S": "60", **common}
        c.add("api-1", "api", WAN_DEMO_PORT=str(c.port), **api).start()
        c.add("api-2", "api", WAN_DEMO_PORT=str(free_port()), **api).start()
        since = time.time() - 5
        for name, drain in (("worker-1", "300"), ("worker-2", "0.5")):
            port = str(free_port())
            c.add(name, "worker", WAN_DEMO_METRICS_PORT=port, WAN_DEMO_DRAIN_S=drain, **common).start()
        try:
            for name in ("api-1", "api-2"):
                c.wait_api(c.nodes[name])
            for name in ("worker-1", "worker-2"):
                c.wait_worker(c.nodes[name], since)
            yield c
        finally:
            c.stop()


def url(ops: Cluster, name: str, path: str) -> str:
    env = ops.nodes[name].env
    return f"http://127.0.0.1:{env.get('WAN_DEMO_METRICS_PORT') or env['WAN_DEMO_PORT']}{path}"


def scrape(ops: Cluster, name: str) -> dict[tuple[str, tuple], float]:
    r = httpx.get(url(ops, name, "/metrics"), headers=auth(TOKEN), timeout=10)
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def total(found: dict, name: str, **labels) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    return sum(v for (n, lab), v in found.items() if n == name and set(labels.items()) <= set(lab))


def submit(ops: Cluster, node: str, png: str, key: str, **payload) -> httpx.Response:
    return httpx.post(url(ops, node, f"{BASE}/requests"), json=body(png, PROMPT, **payload),
                      headers=auth(key), timeout=60)  # fmt: skip


def wait_rows(ops: Cluster, ids: list[str], done, timeout: float = 600) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = ops.rows()
        if done({rid: rows[rid] for rid in ids}):
            return rows
        assert time.monotonic() < deadline, {rid: rows[rid]["status"] for rid in ids}
        time.sleep(0.1)


@pytest.fixture(scope="module")
def png() -> str:
    return b64_image(make_image(96, 64))


def all_done(rows: dict) -> bool:
    return all(r["status"] in TERMINAL for r in rows.values())


def test_metrics_change_as_jobs_run(ops, png):
    assert httpx.get(url(ops, "api-1", "/metrics"), timeout=10).status_code == 401  # token set
    before = {name: scrape(ops, name) for name in ("api-1", "worker-1", "worker-2")}
    ids = [submit(ops, "api-1", png, KEYS[0]).json()["request_id"] for _ in range(2)]
    wait_rows(ops, ids, all_done)
    after = {name: scrape(ops, name) for name in ("api-1", "worker-1", "worker-2")}
    delta = lambda node, name, **lab: total(after[node], name, **lab) - total(before[node], name, **lab)  # noqa: E731
    workers = ("worker-1", "worker-2")
    assert delta("api-1", "wan_demo_jobs_submitted_total", source="rest") == 2
    assert total(after["api-1"], "wan_demo_jobs", status="success") >= 2
    assert total(after["api-1"], "wan_demo_queue_depth") == 0
    assert total(after["api-1"], "wan_demo_workers_alive") == 2
    assert sum(delta(w, "wan_demo_jobs_finished_total", status="success") for w in workers) == 2
    for stage in ("prompt", "encode", "denoise", "decode", "write"):
        assert sum(delta(w, "wan_demo_generation_seconds_count", stage=stage) for w in workers) == 2
    assert sum(delta(w, "wan_demo_queue_wait_seconds_count") for w in workers) == 2
    assert all(total(after[w], "process_resident_memory_bytes") > 10**7 for w in workers)
    assert all(total(after[w], "wan_demo_worker_busy") == 0 for w in workers)
    denoise = sum(total(after[w], "wan_demo_generation_seconds_sum", stage="denoise") for w in workers)
    print(f"\nmetrics: 2 jobs, denoise {denoise:.2f} s in total (measured on CPU, tiny model)")


def test_two_api_nodes_share_the_rate_limit(ops, png):
    before = sum(total(scrape(ops, n), "wan_demo_submits_refused_total", reason="rate_limited")
                 for n in ("api-1", "api-2"))  # fmt: skip
    answers = [submit(ops, ("api-1", "api-2")[i % 2], png, KEYS[2]) for i in range(10)]
    codes = [a.status_code for a in answers]
    print(f"\n5 per minute, one key, 10 submits over 2 API nodes: {codes}")
    assert codes.count(200) == 5 and codes.count(429) == 5, codes
    assert all(a.headers["retry-after"] for a in answers if a.status_code == 429)
    after = sum(total(scrape(ops, n), "wan_demo_submits_refused_total", reason="rate_limited")
                for n in ("api-1", "api-2"))  # fmt: skip
    assert after - before == 5
    wait_rows(ops, [a.json()["request_id"] for a in answers if a.status_code == 200], all_done)


def readiness(ops: Cluster, name: str) -> tuple[int, dict]:
    r = httpx.get(url(ops, name, "/readyz"), timeout=30)
    return r.status_code, r.json()


def wait_ready(ops: Cluster, name: str, ready: bool, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, state = readiness(ops, name)
        if (status == 200) == ready:
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.5)


def test_readiness_follows_postgres(ops, pg):
    state = wait_ready(ops, "api-1", True)
    assert state["checks"] == {"store": "ok", "storage": "ok"} and state["workers_alive"] == 2
    assert readiness(ops, "worker-1")[1]["checks"]["worker"] == "idle"
    pg.server("stop")
    try:
        down = wait_ready(ops, "api-1", False)
        assert down["checks"]["store"].startswith("unavailable") and down["checks"]["storage"] == "ok"
        assert wait_ready(ops, "worker-1", False)["checks"]["store"].startswith("unavailable")
        assert httpx.get(url(ops, "api-1", "/healthz"), timeout=10).status_code == 200  # still alive
    finally:
        pg.server("start")
    assert wait_ready(ops, "api-1", True)["checks"]["store"] == "ok"
    assert wait_ready(ops, "worker-2", True)["checks"]["store"] == "ok"


def busy_on(ops: Cluster, ids: list[str]) -> dict[str, str]:
    """worker -> the request it is denoising (attempt counted), once every id is so."""
    denoising = lambda r: all(x["status"] == "processing" and x["attempts"] for x in r.values())  # noqa: E731
    rows = wait_rows(ops, ids, denoising)
    return {rows[rid]["worker_id"]: rid for rid in ids}


def test_sigterm_with_a_short_grace_hands_the_job_back(ops, png):
    ids = [submit(ops, "api-1", png, KEYS[1], **LONG).json()["request_id"] for _ in range(2)]
    busy = busy_on(ops, ids)
    assert set(busy) == {"worker-1", "worker-2"}, busy
    t0 = time.monotonic()
    code = ops.nodes["worker-2"].terminate()
    took = time.monotonic() - t0
    handed = ops.rows()[busy["worker-2"]]
    print(f"\nSIGTERM worker-2 (grace 0.5 s): exit {code} after {took:.1f} s; its job {handed['status']}")
    assert code == 0
    # Released by its worker: queued with no lease and claims back to 0 (a lease expiry would have left
    # claims at 1). worker-1 may already have taken it (its own job ended while worker-2 exited): then
    # it runs there as claim 1, not 2.
    queued = handed["status"] == "queued" and handed["lease_until"] is None and handed["claims"] == 0
    retaken = handed["worker_id"] == "worker-1" and handed["claims"] == 1
    assert queued or retaken, handed
    rows = wait_rows(ops, ids, all_done)
    assert {rows[rid]["status"] for rid in ids} == {"success"}, {rid: rows[rid] for rid in ids}
    assert rows[busy["worker-2"]]["worker_id"] == "worker-1" and rows[busy["worker-2"]]["error_code"] is None
    assert sorted(ops.runs()[busy["worker-2"]]) == ["worker-1", "worker-2"]


def test_sigterm_with_a_long_grace_lets_the_job_finish(ops, png):
    rid = submit(ops, "api-2", png, KEYS[1], num_inference_steps=30).json()["request_id"]
    assert busy_on(ops, [rid]) == {"worker-1": rid}  # the only worker left
    code = ops.nodes["worker-1"].terminate(timeout=300)
    row = ops.rows()[rid]
    print(f"\nSIGTERM worker-1 (grace 300 s) mid-job: exit {code}; the job {row['status']}")
    assert code == 0 and row["status"] == "success" and (row["claims"], row["worker_id"]) == (1, "worker-1")


def test_sigterm_on_an_api_node(ops, png):
    """In flight before SIGTERM (a body still arriving): answered in full. After: 503 + Retry-After."""
    data = json.dumps(body(png, PROMPT)).encode()
    started, result = threading.Event(), {}

    def trickle():
        yield data[:100]
        started.set()
        time.sleep(4)  # SIGTERM lands meanwhile
        yield data[100:]

    def slow_submit():
        headers = {**auth(KEYS[0]), "Content-Type": "application/json", "Content-Length": str(len(data))}
        result["r"] = httpx.post(url(ops, "api-2", f"{BASE}/requests"), content=trickle(), headers=headers,
                                 timeout=60)  # fmt: skip

    thread = threading.Thread(target=slow_submit)
    thread.start()
    assert started.wait(30)
    time.sleep(0.5)
    node = ops.nodes["api-2"]
    node.proc.send_signal(15)
    time.sleep(1.0)
    late = submit(ops, "api-2", png, KEYS[0])
    ready = httpx.get(url(ops, "api-2", "/readyz"), timeout=10)
    thread.join(60)
    code = node.proc.wait(120)
    answered = result["r"].status_code
    print(f"\nSIGTERM api-2: late submit {late.status_code}, in-flight {answered}, exit {code}")
    assert late.status_code == 503 and late.headers["retry-after"] == "10"
    assert late.json()["error"]["code"] == "draining"
    assert ready.status_code == 503 and ready.json()["draining"] is True
    assert result["r"].status_code == 200, result["r"].text  # arrived before the drain: accepted
    assert code == 0


def test_logs_are_json_without_prompt_or_key(ops):
    lines = [(n, line) for n, node in ops.nodes.items() for line in node.log.read_text().splitlines()]
    text = "\n".join(line for _, line in lines)
    assert PROMPT not in text and "zebra-crossing" not in text
    assert not any(key in text for key in KEYS) and TOKEN not in text
    records = [json.loads(line) for _, line in lines if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    running = [r for r in records if r["message"].startswith("running ")]
    assert running and all(r.get("job_id") and r.get("owner_hash") for r in running)
