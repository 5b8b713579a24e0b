"""Throwaway real services for tests and benchmarks: a PostgreSQL server and an S3 endpoint.

- `TempPostgres`: Debian's PostgreSQL server binaries (/usr/lib/postgresql/<major>/bin, package
  `postgresql`) run on a fresh data folder in /tmp, on a free 127.0.0.1 port, with its unix socket
  in that folder. initdb and postgres refuse to run as root, so as root they run as the package's
  `postgres` user (runuser) on a folder that user owns.
- `temp_s3()`: moto's server mode (a real HTTP S3 endpoint in a thread) and the AWS env vars that
  point boto3 at it.

Nothing starts on import; `start()` / entering the context does.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 60  # pg_ctl -w waits at most this long for the server to accept connections


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, or None without the package."""
    found = sorted(
        glob.glob(PG_GLOB), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0
    )
    return Path(found[-1]) if found and (Path(found[-1]) / "initdb").exists() else None


class TempPostgres:
    """A PostgreSQL server in a temp folder: trust auth on 127.0.0.1 only, fsync on (as in production)."""

    def __init__(self, bin_dir: Path | None = None, port: int | None = None):
        self.bin = bin_dir or postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server binaries not found: apt-get install -y postgresql")
        self.port = port or free_port()
        self.folder: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb/postgres refuse root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=START_TIMEOUT_S + 30)

    def start(self) -> TempPostgres:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="wan-demo-pg-"))
            if os.geteuid() == 0:
                shutil.chown(self.folder, "postgres", "postgres")
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.server("start")
        return self

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    def server(self, action: str) -> None:
        """pg_ctl start | stop | restart, waiting for it to finish (stop: fast mode)."""
        opts = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        args = ["pg_ctl", "-D", str(self.data), "-w", "-t", str(START_TIMEOUT_S), "-m", "fast"]
        if action in ("start", "restart"):
            args += ["-o", opts, "-l", str(self.folder / "server.log")]
        self._run(*args, action)

    def stop(self) -> None:
        if self.folder is None:
            return
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def create_database(self, name: str) -> str:
        """A fresh database on this server; returns its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def temp_s3(bucket: str = "wan-demo") -> Iterator[dict[str, str]]:
    """moto's S3 server on a free port with `bucket` created; yields the env vars for boto3."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per S3 call otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        client = boto3.client(
            "s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip
        client.create_bucket(Bucket=bucket)
        yield env
    finally:
        server.stop()


if __name__ == "__main__":  # manual check: start, connect, stop
    pg = TempPostgres().start()
    t0 = time.monotonic()
    print(pg.url, pg.create_database("probe"), f"{time.monotonic() - t0:.2f}s")
    pg.stop()
