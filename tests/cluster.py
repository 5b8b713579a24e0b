"""A scale-out deployment on this machine for tests: real `python app.py` processes (one API node,
worker nodes) on one PostgreSQL server and one S3 endpoint, each process with its own local folders
(nothing is shared but the database and the bucket)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("key-one-111", "key-two-222", "key-three-333")
START_TIMEOUT_S = 240  # a process imports torch + diffusers (~5-10 s idle, more on a busy machine)


@dataclass
class Node:
    name: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> Node:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "app.py"], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a crash or a lost machine."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def terminate(self, timeout: float = 120) -> int:
        """SIGTERM (a deploy, an orchestrator's stop) and wait for the exit; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Cluster:
    root: Path
    database_url: str
    s3_env: dict[str, str]
    port: int
    lease_s: float
    nodes: dict[str, Node] = field(default_factory=dict)

    def env(self, name: str, role: str) -> dict[str, str]:
        return {
            **os.environ, **self.s3_env, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "OMP_NUM_THREADS": "1",  # three processes share 2 cores: no thread oversubscription
            "WAN_DEMO_ROLE": role, "WAN_DEMO_WORKER_ID": name, "WAN_DEMO_DATABASE_URL": self.database_url,
            "WAN_DEMO_STORAGE_URL": "s3://wan-demo/cluster", "WAN_DEMO_LEASE_S": str(self.lease_s),
            "WAN_DEMO_DATABASE_TIMEOUT_S": "2", "WAN_DEMO_DATA_DIR": str(self.root / name / "data"),
            "WAN_DEMO_OUTPUT_DIR": str(self.root / name / "outputs"), "WAN_DEMO_PORT": str(self.port),
            "WAN_DEMO_HOST": "127.0.0.1", "WAN_DEMO_MODEL": "tiny", "WAN_DEMO_DEVICE": "cpu",
            "WAN_DEMO_TINY_MAX_AREA": "4096", "WAN_DEMO_STEPS": "3", "WAN_DEMO_PROMPT_EXTENDER": "off",
            "WAN_DEMO_API_KEYS": ",".join(KEYS), "WAN_DEMO_MAX_ACTIVE_PER_KEY": "100",
            "WAN_DEMO_QUEUE_MAX_SIZE": "100",
        }  # fmt: skip

    def add(self, name: str, role: str, **env: str) -> Node:
        """A node (not started); `env` overrides its WAN_DEMO_* settings (e.g. its own port)."""
        node = self.nodes[name] = Node(name, {**self.env(name, role), **env}, self.root / f"{name}.log")
        return node

    def wait_api(self, node: Node) -> None:
        url = f"http://127.0.0.1:{node.env['WAN_DEMO_PORT']}/api/v1/apikey/models"
        self._wait(node, lambda: httpx.get(url, headers=auth(KEYS[0]), timeout=2).status_code == 200)

    def wait_worker(self, node: Node, since: float) -> None:
        def seen() -> bool:
            with psycopg.connect(self.database_url, connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT seen_at FROM workers WHERE worker_id = %s", (node.name,)
                ).fetchone()
            return row is not None and row[0] >= since

        self._wait(node, seen)

    @staticmethod
    def _wait(node: Node, ready) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert node.proc.poll() is None, f"{node.name} exited:\n{node.tail()}"
            try:
                if ready():
                    return
            except (httpx.HTTPError, psycopg.Error):
                pass
            time.sleep(0.2)
        raise AssertionError(f"{node.name} did not start:\n{node.tail()}")

    def rows(self) -> dict[str, dict]:
        """Every job row, read from the database itself (not through the API under test)."""
        with psycopg.connect(self.database_url, row_factory=psycopg.rows.dict_row) as conn:
            return {r["request_id"]: r for r in conn.execute("SELECT * FROM requests").fetchall()}

    def runs(self) -> dict[str, list[str]]:
        """request_id -> the workers whose log says they started running it (one entry per run)."""
        found: dict[str, list[str]] = {}
        for node in self.nodes.values():
            for line in node.log.read_text(errors="replace").splitlines():
                if line.startswith("{"):  # WAN_DEMO_LOG_FORMAT=json: the message field
                    line = " " + json.loads(line).get("message", "")
                if " running " in line and " on " in line:
                    rid = line.split(" running ", 1)[1].split()[0]
                    found.setdefault(rid, []).append(node.name)
        return found

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
