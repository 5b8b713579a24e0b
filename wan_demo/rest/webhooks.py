"""Webhooks: the submit-time check of `webhook_url` and the deliverer threads.

A job with a webhook gets an outbox row per subscribed event in the same transaction as the status
change (jobs/store/sql_events.py), so a restart never loses a pending delivery. Deliverers (threads
in every process that serves REST: they hold the keys, the renderer and the SSRF guard, and keep
the GPU worker's thread free) claim due events, POST the job's view as GET shows it, signed per
Standard Webhooks with the `standardwebhooks` library (`webhook-id` = the event id, the same on
every retry; `webhook-timestamp`; `webhook-signature` = v1 HMAC-SHA256 with the key's secret), and
record the outcome. Failures are retried with exponential backoff (Settings.webhook_retry_s,
doubling, at most 1 h) for up to 24 h after the event; each attempt has 10 s, goes only to a public
address or one allow-listed in Settings.webhook_allow_private (resolved again and pinned), and
follows no redirects.
"""

from __future__ import annotations

import heapq
import http.client
import logging
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from standardwebhooks import Webhook

from wan_demo.core.request import InvalidRequest
from wan_demo.core.settings import Settings
from wan_demo.jobs.common import IDEMPOTENCY_S, WEBHOOK_EVENTS, Delivery, Job
from wan_demo.jobs.metrics import Metrics
from wan_demo.jobs.store.base import JobStore
from wan_demo.jobs.store.sql_ops import OUTBOX_CHANNEL
from wan_demo.rest.keys import webhook_secret
from wan_demo.rest.netguard import (
    PinnedHTTP,
    PinnedHTTPS,
    Resolver,
    check_address,
    in_networks,
    parse_networks,
    parse_url,
    reachable,
    resolve,
)

log = logging.getLogger(__name__)

FIELD = "webhook_url"
SCHEMES = ("https", "http")
TIMEOUT_S = 10.0  # one attempt: connect, send, read the answer
RETRY_MAX_S = 3600.0  # the backoff stops doubling here
GIVE_UP_S = IDEMPOTENCY_S  # 24 h after its event, an undelivered webhook is given up
LEASE_S = TIMEOUT_S + 20.0  # a claimed event is due again after this (a deliverer died mid-attempt)
THREADS = 4  # attempts in flight per process: one slow receiver does not hold up the others
POLL_S = 0.5  # idle deliverers look for due events this often, unless the store wakes them:
SAFETY_POLL_S = 20.0  # then only this often (a new outbox row notifies; retries are timed here)
ANSWER_BYTES = 64 * 1024  # of a receiver's answer read (and dropped)

Render = Callable[[Job], bytes]  # the job's view as GET shows it, JSON


def allowed(address: str, settings: Settings) -> bool:
    return check_address(address) or in_networks(address, parse_networks(settings.webhook_allow_private))


def check_webhook(
    url: str, events: list[str] | None, settings: Settings, base: str, resolver: Resolver | None = None
) -> dict:
    """The subscription to store with the job, or InvalidRequest naming webhook_url / webhook_events."""
    if not settings.webhook_secret:
        raise InvalidRequest(
            FIELD, "webhooks are disabled on this server (no WAN_DEMO_WEBHOOK_SECRET is set)"
        )
    target = parse_url(url, FIELD, SCHEMES)
    allow = partial(allowed, settings=settings)
    addresses = reachable(target, FIELD, allow, resolver, " (nor in WAN_DEMO_WEBHOOK_ALLOW_PRIVATE)")
    private = not all(check_address(a) for a in addresses)
    if target.scheme == "http" and not private:
        raise InvalidRequest(FIELD, "use https (plain http only to allow-listed private addresses)")
    chosen = list(dict.fromkeys(WEBHOOK_EVENTS if events is None else events))
    unknown = [e for e in chosen if e not in WEBHOOK_EVENTS]
    if unknown or not chosen:
        what = f"{unknown[0][:40]!r} is unknown" if unknown else "must not be empty"
        raise InvalidRequest("webhook_events", f"{what}; use any of {', '.join(WEBHOOK_EVENTS)}")
    return {"url": url, "events": chosen, "base": base}


def signed_headers(secret: str, event_id: str, body: bytes, event: str) -> dict[str, str]:
    """Standard Webhooks headers for one attempt (a fresh timestamp, the event's id)."""
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(event_id, now, body.decode("utf-8"))
    return {
        "webhook-id": event_id, "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature, "webhook-event": event, "content-type": "application/json",
        "user-agent": "wan-demo-webhooks/1",
    }  # fmt: skip


class Deliverer:
    """Threads that drain the outbox; building starts nothing, `start()` does."""

    def __init__(
        self, store: JobStore, settings: Settings, render: Render, resolver: Resolver | None = None,
        metrics: Metrics | None = None,
    ):  # fmt: skip
        self.store, self.settings, self.render = store, settings, render
        self.resolver = resolver or resolve
        self.metrics = metrics or Metrics()
        self._stopping = threading.Event()
        self._wake = threading.Condition()  # notify_all: every idle deliverer looks
        self._rounds = 0  # bumped by each wake(), so a wake between two looks is not lost
        self._dues: list[float] = []  # heap: monotonic times of retries this process scheduled
        self._threads: list[threading.Thread] = []

    @property
    def enabled(self) -> bool:
        return bool(self.settings.webhook_secret)

    def start(self) -> Deliverer:
        if self.enabled and not self._threads:
            self._threads = [
                threading.Thread(target=self._loop, name=f"webhooks-{i}", daemon=True) for i in range(THREADS)
            ]
            self.store.subscribe(self._heard)
            for t in self._threads:
                t.start()
        return self

    def stop(self, timeout: float = TIMEOUT_S + 2) -> None:
        self._stopping.set()
        self.store.unsubscribe(self._heard)
        self.wake()
        for t in self._threads:
            t.join(timeout)

    def wake(self) -> None:
        with self._wake:
            self._rounds += 1
            self._wake.notify_all()

    def _heard(self, channel: str, _payload: str) -> None:
        if channel in ("", OUTBOX_CHANNEL):
            self.wake()

    def _loop(self) -> None:
        seen = -1
        while not self._stopping.is_set():
            with self._wake:
                seen = self._rounds
            try:
                delivery = self.store.claim_delivery(LEASE_S)
            except Exception as e:  # noqa: BLE001  # the database restarts: wait, try again
                log.warning("webhook outbox unavailable: %s", e)
                delivery = None
            if delivery is None:
                self._idle(seen)
                continue
            self.attempt(delivery)

    def _idle(self, seen: int) -> None:
        """Wait for a wake-up, the next retry this process scheduled, or the poll (slow while the
        store's notifications reach this process)."""
        poll = SAFETY_POLL_S if self.store.wakes_other_processes else POLL_S
        with self._wake:
            due = self._dues[0] if self._dues else float("inf")
            if self._rounds == seen:
                self._wake.wait(max(min(poll, due - time.monotonic()), 0.05))
            while self._dues and self._dues[0] <= time.monotonic():
                heapq.heappop(self._dues)

    def attempt(self, d: Delivery) -> None:
        """One POST of one event, and its outcome in the outbox (delivered, retry later, given up)."""
        try:
            status, error = self._post(d)
        except Exception as e:  # noqa: BLE001  # an unexpected failure is a failed attempt, retried
            log.exception("webhook %s for %s", d.event_id, d.request_id)
            status, error = None, f"internal error ({type(e).__name__})"
        retry_in = None
        if error is not None:
            delay = min(self.settings.webhook_retry_s * 2**d.attempts, RETRY_MAX_S)
            retry_in = delay if time.time() + delay < d.created_at + GIVE_UP_S else None
        result = "delivered" if error is None else ("retry" if retry_in is not None else "given_up")
        self.metrics.deliveries.labels(result).inc()
        if retry_in is not None:
            with self._wake:  # look again when it is due (other processes' retries: their own timers)
                heapq.heappush(self._dues, time.monotonic() + retry_in)
        if error is not None:
            log.info("webhook %s (%s) for %s: %s; retry in %s s", d.event_id, d.event, d.request_id, error,
                     f"{retry_in:g}" if retry_in is not None else "never (given up)")  # fmt: skip
        try:
            self.store.record_delivery(d.event_id, status, error, retry_in)
        except Exception as e:  # noqa: BLE001  # the lease runs out and the event is attempted again
            log.warning("could not record webhook %s: %s", d.event_id, e)

    def _post(self, d: Delivery) -> tuple[int | None, str | None]:
        try:
            target = parse_url(d.job.webhook.get("url", ""), FIELD, SCHEMES)
            addresses = self.resolver(target.hostname, target.port)
        except InvalidRequest as e:
            return None, e.rule
        if not addresses or not all(allowed(a, self.settings) for a in addresses):
            return None, "the host no longer resolves to an allowed address"
        body = self.render(d.job)
        headers = signed_headers(
            webhook_secret(self.settings.webhook_secret, d.owner), d.event_id, body, d.event
        )
        host, ip, port = target.hostname, addresses[0], target.port
        if target.scheme == "https":
            conn = PinnedHTTPS(host, ip, port, TIMEOUT_S, ssl.create_default_context())
        else:
            conn = PinnedHTTP(host, ip, port, TIMEOUT_S)
        deadline = time.monotonic() + TIMEOUT_S
        try:
            conn.request("POST", target.target, body=body, headers=headers)
            sock = conn.sock  # kept: an answer with "Connection: close" takes it from conn
            answer = conn.getresponse()
            _drop_answer(sock, answer, deadline)
        except TimeoutError:
            return None, f"no answer within {TIMEOUT_S:g} s"
        except (OSError, http.client.HTTPException, ValueError) as e:  # ValueError: a malformed answer
            return None, f"connection failed ({type(e).__name__})"
        finally:
            conn.close()
        if time.monotonic() > deadline:
            return answer.status, f"answered after more than {TIMEOUT_S:g} s"
        if 200 <= answer.status < 300:
            return answer.status, None
        return answer.status, f"HTTP {answer.status}" + (
            " (redirects are not followed)" if answer.status < 400 else ""
        )


def _drop_answer(sock, answer, deadline: float) -> None:
    """Read (and drop) up to ANSWER_BYTES of a receiver's answer, waiting no later than `deadline`: a
    receiver dripping a byte at a time cannot hold a deliverer past TIMEOUT_S (TimeoutError)."""
    left = ANSWER_BYTES
    while left > 0:
        wait = deadline - time.monotonic()
        if wait <= 0:
            raise TimeoutError
        sock.settimeout(wait)
        chunk = answer.read1(left)
        if not chunk:
            return
        left -= len(chunk)
