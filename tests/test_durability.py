"""Crash durability of the REST store: the real server (`python app.py`, tiny model) is SIGKILLed while
a generation runs, several times; after each restart every acknowledged request_id must still exist
with a legal status, and in the end every one reaches a terminal status. Figures are printed
(run with -s to see them): kills, requests acknowledged, lost.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from apitools import KEY_A, auth, b64_image, body
from conftest import make_image

ROOT = Path(__file__).resolve().parents[1]
BASE = "/api/v1/apikey"
KILLS = 2  # each restart costs a process start (~10 s idle); 2 kills cover requeue-once then worker_lost
PER_ROUND = 3  # requests acknowledged before each kill
LEGAL = {"queued", "processing", "success", "failed", "cancelled"}
TERMINAL = {"success", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{env['WAN_DEMO_PORT']}{BASE}/models"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, headers=auth(), timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start:\n" + log.read_text()[-3000:])


def statuses(client: httpx.Client, ids: list[str]) -> dict[str, dict]:
    return {rid: client.get(f"{BASE}/requests/{rid}", headers=auth()).json() for rid in ids}


def wait_processing(client: httpx.Client, ids: list[str], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(v["status"] == "processing" and v.get("started_at") for v in statuses(client, ids).values()):
            return True
        time.sleep(0.05)
    return False


def test_sigkill_mid_job_loses_nothing(tmp_path):
    port = free_port()
    env = {
        **os.environ, "WAN_DEMO_MODEL": "tiny", "WAN_DEMO_DEVICE": "cpu", "WAN_DEMO_API_KEYS": KEY_A,
        "WAN_DEMO_DATA_DIR": str(tmp_path / "data"), "WAN_DEMO_OUTPUT_DIR": str(tmp_path / "outputs"),
        "WAN_DEMO_PORT": str(port), "WAN_DEMO_HOST": "127.0.0.1", "WAN_DEMO_TINY_MAX_AREA": "4096",
        "WAN_DEMO_STEPS": "2", "WAN_DEMO_MAX_ACTIVE_PER_KEY": "100", "WAN_DEMO_QUEUE_MAX_SIZE": "100",
        "WAN_DEMO_PROMPT_EXTENDER": "off", "GRADIO_ANALYTICS_ENABLED": "False",
    }  # fmt: skip
    log = tmp_path / "server.log"
    request = body(b64_image(make_image(96, 64)))
    acknowledged: list[str] = []
    kills = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for _ in range(KILLS):
            proc = start(env, log)
            try:
                seen = statuses(client, acknowledged)  # everything acknowledged before the last kill
                assert all(v.get("status") in LEGAL for v in seen.values()), seen
                for _ in range(PER_ROUND):
                    r = client.post(f"{BASE}/requests", json=request, headers=auth())
                    assert r.status_code == 200, r.text
                    acknowledged.append(r.json()["request_id"])
                assert wait_processing(client, acknowledged), log.read_text()[-3000:]
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
            kills += 1
        proc = start(env, log)
        try:
            deadline = time.monotonic() + 120
            while True:
                final = statuses(client, acknowledged)
                if all(v.get("status") in TERMINAL for v in final.values()) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)
    lost = [rid for rid, v in final.items() if v.get("status") not in LEGAL]
    counts = {s: sum(v.get("status") == s for v in final.values()) for s in sorted(TERMINAL)}
    print(f"\ndurability: kills={kills} acknowledged={len(acknowledged)} lost={len(lost)} final={counts}")
    assert kills == KILLS and len(acknowledged) == KILLS * PER_ROUND and not lost
    assert all(v["status"] in TERMINAL for v in final.values()), final
    worker_lost = [v for v in final.values() if v["status"] == "failed"]
    assert all(v["error"]["code"] == "worker_lost" for v in worker_lost), worker_lost
    assert counts["success"] >= 1
    assert (
        len(list((tmp_path / "outputs" / "rest").glob("*.mp4"))) >= counts["success"]
    )  # real files behind them
