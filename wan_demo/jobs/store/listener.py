"""PostgreSQL LISTEN on one dedicated connection per process, as Postgres-backed queues do
(procrastinate, PGQueuer, river): `pg_notify` inside a writing transaction is delivered to every
listener when it commits, so a submit, a cancel or a new webhook event wakes the right waiters at
once instead of at their next poll.

The connection is outside the pool (a pooled connection is returned between uses; LISTEN must stay
open). When it drops (a database restart), the thread reconnects with a growing pause and then
tells subscribers that notifications may have been missed (channel ""), so they look once; while it
is down, `connected` is False and waiters go back to polling at their old pace.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

WAIT_S = 1.0  # notifies() returns at least this often, to see a stop request
RETRY_S = (0.5, 1.0, 2.0, 5.0)  # pauses between reconnects (the last repeats)


class Listener:
    def __init__(
        self, url: str, channels: Iterable[str], dispatch: Callable[[str, str], None], timeout_s: float = 5.0
    ):
        self.url, self.channels, self.dispatch, self.timeout_s = url, tuple(channels), dispatch, timeout_s
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> Listener:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="pg-listener", daemon=True)
            self._thread.start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(WAIT_S + self.timeout_s + 1)
            self._thread = None

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen()
                failures = 0
            except Exception as e:  # noqa: BLE001  # any failure: reconnect (the database restarts)
                self._connected.clear()
                if failures == 0:
                    log.warning("LISTEN connection lost (%s); polling until it is back", type(e).__name__)
                self._stop.wait(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1
        self._connected.clear()

    def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            self.url, autocommit=True, connect_timeout=math.ceil(self.timeout_s),
            application_name="wan-demo-listen",
        ) as conn:  # fmt: skip
            for channel in self.channels:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self._connected.set()
            self.dispatch("", "")  # whatever happened while not listening: look once
            while not self._stop.is_set():
                for note in conn.notifies(timeout=WAIT_S):
                    self.dispatch(note.channel, note.payload)
