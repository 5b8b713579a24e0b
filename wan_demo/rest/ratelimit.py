"""Per-key budgets on REST submits (Settings.submits_per_min), with the `limits` library: a moving
window of 60 s per API key.

The accounting rule:
- a submit that queues jobs counts against the submit budget, `submits_per_min`, once per job (a
  batch counts its number of videos);
- a submit that queues nothing (refused with a 4xx: bad input, too many active, a parent that is
  gone, a body over the size limit ...; or answered from an Idempotency-Key replay) counts once
  against a separate budget REFUSED_FACTOR times larger. A budget, because a refused submit still
  costs work (decoding up to max_file_size_mb of image, a DNS lookup for a webhook and, with URL
  inputs on, an outbound fetch of up to 10 s): unmetered, a key could make the server fetch without
  end. Larger, because a client fixing its requests must not lose its real submits: 60 malformed
  requests no longer lock a key out for a minute;
- an answer that is the server's fault (5xx, e.g. the job database restarting) counts nowhere.
Both budgets are checked before the work (a spent budget answers 429 without reading the body), the
submit budget again once the body says how many videos it asks for. Checking is holding: a submit in
flight holds one slot of each budget (and a batch its videos) in the shared window, in the same
transaction that checks for room, so parallel submits from one key cannot overshoot a budget, on one
node or across nodes. When the answer is known the slots it counts in stay and the others are given
back (a crashed node's held slots count until they leave the window: too strict for a minute, never
too lenient).

Every submit answer for a valid key (2xx, 4xx, and a 5xx a handler answers, such as 503 while the
job database restarts) carries the IETF draft's RateLimit-Limit / RateLimit-Remaining /
RateLimit-Reset / RateLimit-Policy headers: the submit budget's, or on a 429 the budget that is spent
(with Retry-After: when its oldest counted submit leaves the window). A crash (an exception no handler
took) is answered 500 by InternalErrors outside this middleware, without them; its slots are released.

Where counts live (`Windows`): in the job store (rest/limitstore.py, the `rate_hits` table), so every
API node on one database shares each key's windows. Building opens nothing; `start()` creates the
storage.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from wan_demo.jobs.common import StoreUnavailable
from wan_demo.rest.errors import error_response, store_unavailable

log = logging.getLogger(__name__)

WINDOW_S = 60  # the budgets are per minute
REFUSED_FACTOR = 10  # the refused-submit budget is this many times the submit budget
SUBMIT_PATH = "/apikey/requests"  # POST here is a submit (below the /api/v1 mount)
QUEUED, REFUSED = "queued", "refused"  # what a submit's answer counts as
SCOPE_KEY = "wan_demo.submit"  # the ASGI scope entry holding a submit's Ticket


@dataclass(frozen=True)
class Budget:
    name: str  # "submits" | "refused"
    per_min: int
    words: str  # what it counts, for the 429 message


@dataclass
class Ticket:
    """One submit in flight: who, how many jobs it would queue, and the budget that refused it."""

    owner: str
    hold: str  # tags the slots it holds in the store's windows until settled
    cost: int = 1  # held in the submit budget (a batch: its number of videos)
    spent: Budget | None = None  # set when the submit budget has no room for `cost` (answer 429)


class Windows:
    """Moving-window counts per (budget, owner) in the job store, through its `limits` storage."""

    def __init__(self, store) -> None:
        from wan_demo.rest.limitstore import JobStoreStorage

        self.storage = JobStoreStorage(store)

    @staticmethod
    def _key(budget: Budget, owner: str) -> str:
        from limits import RateLimitItemPerMinute

        return RateLimitItemPerMinute(budget.per_min).key_for(budget.name, owner)

    def reserve(self, budget: Budget, owner: str, n: int, hold: str) -> bool:
        """Hold `n` more submits of the window if they fit (one transaction: no node can overshoot)."""
        return self.storage.reserve(self._key(budget, owner), budget.per_min, WINDOW_S, n, hold)

    def release(self, budget: Budget, owner: str, hold: str) -> None:
        self.storage.release(self._key(budget, owner), hold)

    def stats(self, budget: Budget, owner: str) -> tuple[float, int]:
        """(unix seconds when the oldest counted submit leaves the window, submits left)."""
        first, count = self.storage.get_moving_window(self._key(budget, owner), budget.per_min, WINDOW_S)
        return first + WINDOW_S, budget.per_min - count


class SubmitLimit:
    def __init__(self, per_min: int, store):
        self.per_min = per_min  # 0 = no limit (both budgets off)
        self.store = store  # the JobStore that counts (shared by every API node on it)
        self.submits = Budget("submits", per_min, "submits")
        self.refused = Budget("refused", per_min * REFUSED_FACTOR, "refused submits (4xx or replays)")
        self._windows: Windows | None = None

    @property
    def enabled(self) -> bool:
        return self.per_min > 0

    def start(self) -> SubmitLimit:
        if self.enabled and self._windows is None:
            self._windows = Windows(self.store)
        return self

    def admit(self, owner: str) -> Ticket | Budget:
        """Before the work: a Ticket holding one slot of each budget until `settle`, or the budget
        that is spent."""
        self.start()
        ticket = Ticket(owner, hold=uuid.uuid4().hex)
        if not self._windows.reserve(self.submits, owner, 1, ticket.hold):
            return self.submits
        if not self._windows.reserve(self.refused, owner, 1, ticket.hold):
            self._windows.release(self.submits, owner, ticket.hold)
            return self.refused
        return ticket

    def charge(self, ticket: Ticket, cost: int) -> bool:
        """The body asks for `cost` jobs: hold them, or mark the ticket spent (False: answer 429)."""
        extra = cost - ticket.cost
        if extra > 0 and not self._windows.reserve(self.submits, ticket.owner, extra, ticket.hold):
            ticket.spent = self.submits
            return False
        ticket.cost = max(cost, ticket.cost)
        return True

    def settle(self, ticket: Ticket, outcome: str | None) -> dict[str, str]:
        """The answer is known: keep the held slots it counts in (QUEUED: the submit budget's `cost`,
        REFUSED: the refusal's one; None, the server's own failure: neither), give back the rest, and
        return the headers the answer carries."""
        owner = ticket.owner
        if outcome != QUEUED:
            self._windows.release(self.submits, owner, ticket.hold)
        if outcome != REFUSED:
            self._windows.release(self.refused, owner, ticket.hold)
        if ticket.spent is not None:
            return self.headers(ticket.spent, owner, limited=True)
        return self.headers(self.submits, owner)

    def headers(self, budget: Budget, owner: str, limited: bool = False) -> dict[str, str]:
        reset_at, remaining = self._windows.stats(budget, owner)
        reset_in = max(0, math.ceil(reset_at - time.time()))
        headers = {
            "RateLimit-Limit": str(budget.per_min),
            "RateLimit-Remaining": str(max(0, remaining)),
            "RateLimit-Reset": str(reset_in),
            "RateLimit-Policy": f"{budget.per_min};w={WINDOW_S}",
        }
        if limited:
            headers["Retry-After"] = str(max(1, reset_in))
        return headers


def ticket_of(scope: dict) -> Ticket | None:
    """The submit's Ticket that SubmitBudgets put in the request's ASGI scope (None: no limit)."""
    return scope.get(SCOPE_KEY)


def limited_message(budget: Budget) -> str:
    return f"more than {budget.per_min} {budget.words} in the last minute for this key; retry later"


class SubmitBudgets:
    """ASGI middleware around the REST app: applies SubmitLimit to every submit (POST
    /apikey/requests) that carries a valid key, whatever answers it (the route, a validation error,
    the body limit). Added inside InternalErrors, so a crash still settles as the server's fault.
    The route charges a batch's cost on the ticket (RestService.rate); `on_limited` counts each 429."""

    def __init__(
        self, app, limit: SubmitLimit, owner_of: Callable[[str | None], str | None],
        on_limited: Callable[[], None] = lambda: None,
    ):  # fmt: skip
        self.app, self.limit, self.owner_of, self.on_limited = app, limit, owner_of, on_limited

    async def __call__(self, scope, receive, send):
        owner = self._owner(scope)
        if owner is None:  # not a submit, no limit, or no valid key (the app answers 401)
            return await self.app(scope, receive, send)
        try:  # the counts may live in the job store: blocking calls, off the event loop
            ticket = await run_in_threadpool(self.limit.admit, owner)
        except StoreUnavailable:
            return await store_unavailable()(scope, receive, send)
        if not isinstance(ticket, Ticket):  # a spent budget
            self.on_limited()
            headers = await run_in_threadpool(self.limit.headers, ticket, owner, True)
            answer = error_response(429, "rate_limited", limited_message(ticket), headers=headers)
            return await answer(scope, receive, send)
        scope[SCOPE_KEY] = ticket
        settled = False

        async def counted(event):
            nonlocal settled
            if event["type"] == "http.response.start" and not settled:
                settled = True
                outcome = _outcome(event["status"], dict(event.get("headers") or []))
                headers = await run_in_threadpool(self._settle, ticket, outcome)
                extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
                event = {**event, "headers": [*event.get("headers", []), *extra]}
            await send(event)

        try:
            await self.app(scope, receive, counted)
        finally:
            if not settled:  # an exception before any answer: InternalErrors answers 500
                await run_in_threadpool(self._settle, ticket, None)

    def _settle(self, ticket: Ticket, outcome: str | None) -> dict[str, str]:
        """settle(); with the database down the answer goes out uncounted and without RateLimit-*
        (it is already decided: a queued job must not turn into an error)."""
        try:
            return self.limit.settle(ticket, outcome)
        except StoreUnavailable as e:
            log.warning("a submit's answer went out uncounted: %s", e)
            return {}

    def _owner(self, scope) -> str | None:
        if scope["type"] != "http" or scope["method"] != "POST" or not self.limit.enabled:
            return None
        path, root = scope["path"], scope.get("root_path", "")
        if (path[len(root) :] if path.startswith(root) else path) != SUBMIT_PATH:
            return None
        authorization = dict(scope.get("headers") or []).get(b"authorization")
        return self.owner_of(authorization.decode("latin-1") if authorization is not None else None)


def _outcome(status: int, headers: dict[bytes, bytes]) -> str | None:
    """What an answer counts as: new jobs, a refusal (4xx, or a replay that queued nothing), or
    nothing (the server's own failure)."""
    if 200 <= status < 300:
        return REFUSED if headers.get(b"idempotent-replayed") == b"true" else QUEUED
    return REFUSED if status < 500 else None
