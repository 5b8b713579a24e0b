"""Scale-out with real parts, really started: one API node and two worker nodes (`python app.py
--role api|worker`, tiny model) on a PostgreSQL server (initdb/pg_ctl in a temp folder) and an S3
endpoint (moto's server mode), each process with its own local folders.

The tests share the processes (each start costs ~5-10 s) and run in order: 20 jobs from 3 keys;
PostgreSQL restarted under load; a worker SIGKILLed mid-job, and the API node killed and restarted.
Figures are printed (run with -s).
"""

from __future__ import annotations

import time

import httpx
import pytest
from apitools import b64_image, body
from cluster import KEYS, Cluster, auth
from conftest import make_image

from bench.services import TempPostgres, free_port, postgres_bin, temp_s3

pytestmark = pytest.mark.system  # a cluster of processes, SIGKILLed and restarted

BASE = "/api/v1/apikey"
LEASE_S = 8.0  # short, so a lost worker's job is taken over within seconds (restarts take ~2 s)
TERMINAL = {"success", "failed", "cancelled"}


@pytest.fixture(scope="module")
def pg(request):
    """A server of this module's own: the tests restart it."""
    if postgres_bin() is None:
        request.getfixturevalue("postgres")  # skips, or fails in CI, with the install hint
    server = TempPostgres().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(pg, tmp_path_factory):
    with temp_s3("wan-demo") as s3_env:
        c = Cluster(tmp_path_factory.mktemp("cluster"), pg.url, s3_env, free_port(), LEASE_S)
        since = time.time() - 5
        nodes = [c.add("api", "api").start(), c.add("worker-1", "worker").start()]
        nodes.append(c.add("worker-2", "worker").start())
        try:
            c.wait_api(nodes[0])
            for worker in nodes[1:]:
                c.wait_worker(worker, since)
            yield c
        finally:
            c.stop()


@pytest.fixture(scope="module")
def client(cluster):
    with httpx.Client(base_url=f"http://127.0.0.1:{cluster.port}", timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def png() -> str:
    return b64_image(make_image(96, 64))


def submit(client: httpx.Client, png: str, key: str) -> str:
    r = client.post(f"{BASE}/requests", json=body(png), headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()["request_id"]


def wait_all(client: httpx.Client, ids: dict[str, str], timeout: float = 600) -> dict[str, dict]:
    """Poll every request through the API until all are terminal; connection errors and 503s
    (a node or the database restarting) are waited out."""
    deadline, final = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        for rid, key in ids.items():
            if final.get(rid, {}).get("status") in TERMINAL:
                continue
            try:
                r = client.get(f"{BASE}/requests/{rid}", headers=auth(key))
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                final[rid] = r.json()
        if len(final) == len(ids) and all(v["status"] in TERMINAL for v in final.values()):
            break
        time.sleep(0.2)
    return final


def test_twenty_jobs_from_three_keys_each_run_exactly_once(cluster, client, png):
    ids = {submit(client, png, KEYS[i % 3]): KEYS[i % 3] for i in range(20)}
    final = wait_all(client, ids)
    assert {v["status"] for v in final.values()} == {"success"}, final
    rows, runs = cluster.rows(), cluster.runs()
    workers = {"worker-1", "worker-2"}
    assert all(rows[rid]["claims"] == 1 and rows[rid]["attempts"] == 1 for rid in ids)
    assert all(len(runs[rid]) == 1 for rid in ids), {
        rid: runs.get(rid) for rid in ids
    }  # no job in two workers
    assert {final[rid]["qworker_id"] for rid in ids} <= workers
    assert all(final[rid]["qworker_id"] == runs[rid][0] for rid in ids)  # the id names the worker that ran it
    per_worker = {w: sum(v["qworker_id"] == w for v in final.values()) for w in sorted(workers)}
    print(f"\n20 jobs, 3 keys: per worker {per_worker}")
    assert all(per_worker.values())  # both took jobs
    rid = next(iter(ids))
    video = client.get(final[rid]["outcome"]["video_url"], headers=auth(ids[rid]))
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"  # from the bucket, through the API
    assert rows[rid]["video_path"].startswith("s3://wan-demo/cluster/outputs/rest/")


def test_postgres_restart_under_load(cluster, client, png, pg):
    before = len(cluster.rows())  # the module's cluster may have run other tests' jobs
    ids = {submit(client, png, KEYS[i % 3]): KEYS[i % 3] for i in range(4)}
    deadline = time.monotonic() + 120
    while not any(r["status"] == "processing" for r in cluster.rows().values()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pg.server("stop")
    try:
        down = client.get(f"{BASE}/requests/{next(iter(ids))}", headers=auth(KEYS[0]))
        refused = client.post(f"{BASE}/requests", json=body(png), headers=auth(KEYS[0]))
    finally:
        pg.server("start")
    assert down.status_code == 503 and down.headers["retry-after"] == "5", down.text
    assert down.json()["error"]["code"] == "unavailable" and refused.status_code == 503
    final = wait_all(client, ids)
    rows, runs = cluster.rows(), cluster.runs()
    print(f"\npostgres restart: {len(ids)} jobs, statuses {sorted(v['status'] for v in final.values())}")
    assert {v["status"] for v in final.values()} == {"success"}, final  # none lost
    assert all(rows[rid]["claims"] == 1 and len(runs[rid]) == 1 for rid in ids)  # none duplicated
    assert len(rows) == before + len(ids)  # the refused submit left no row


def test_sigkill_a_worker_mid_job_then_restart_the_api(cluster, client, png):
    ids = {submit(client, png, KEYS[i % 3]): KEYS[i % 3] for i in range(4)}
    deadline, victim = time.monotonic() + 120, None
    while victim is None:
        assert time.monotonic() < deadline, "worker-2 never started a job"
        busy = [r for r in cluster.rows().values() if r["status"] == "processing" and r["started_at"]]
        victim = next((r["request_id"] for r in busy if r["worker_id"] == "worker-2"), None)
        time.sleep(0.02 if victim is None else 0)
    cluster.nodes["worker-2"].kill()
    assert cluster.rows()[victim]["status"] == "processing"  # killed mid-job
    api = cluster.nodes["api"]
    api.kill()  # the API node goes too; clients keep polling
    api.start()
    cluster.wait_api(api)
    final = wait_all(client, ids)
    rows = cluster.rows()
    statuses = sorted(v["status"] for v in final.values())
    print(f"\nSIGKILL worker-2 mid-job ({victim[:8]}), API restarted: {statuses}")
    assert {v["status"] for v in final.values()} == {"success"}, final  # 0 acknowledged jobs lost
    taken = rows[victim]
    assert (taken["claims"], taken["worker_id"]) == (2, "worker-1")  # taken over after the lease ran out
    assert final[victim]["qworker_id"] == "worker-1"
    assert sorted(cluster.runs()[victim]) == ["worker-1", "worker-2"]  # one run lost, one finished
