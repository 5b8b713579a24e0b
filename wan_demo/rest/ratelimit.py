"""Per-key rate limit on REST submits (Settings.submits_per_min), with the `limits` library.

A moving window of 60 s per API key: a submit over the limit answers 429 with `Retry-After` (when a
slot frees) and the IETF draft's `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset` /
`RateLimit-Policy` headers, which accepted submits carry too. The hits are counted in the job store
(rest/limitstore.py), so API nodes on one database share each key's window; without a store (unit
use) `limits`' in-process memory storage counts them. Building opens nothing; `start()` creates the
storage.
"""

from __future__ import annotations

import math
import time

WINDOW_S = 60  # the limit is per minute


class SubmitLimit:
    def __init__(self, per_min: int, store=None):
        self.per_min = per_min  # 0 = no limit
        self.store = store  # the JobStore that counts the hits (shared by every API node on it)
        self._limiter = None
        self._item = None

    def start(self) -> SubmitLimit:
        if self.per_min > 0 and self._limiter is None:
            from limits import RateLimitItemPerMinute, storage, strategies

            from wan_demo.rest.limitstore import JobStoreStorage

            self._item = RateLimitItemPerMinute(self.per_min)
            counted = JobStoreStorage(self.store) if self.store is not None else storage.MemoryStorage()
            self._limiter = strategies.MovingWindowRateLimiter(counted)
        return self

    def hit(self, owner: str, cost: int = 1) -> tuple[bool, dict[str, str]]:
        """Count a submit of `cost` jobs (a batch counts each video) for `owner`: (allowed, headers
        to send either way)."""
        if self.per_min <= 0:
            return True, {}
        self.start()
        allowed = self._limiter.hit(self._item, "submit", owner, cost=cost)
        reset_at, remaining = self._limiter.get_window_stats(self._item, "submit", owner)
        reset_in = max(0, math.ceil(reset_at - time.time()))
        headers = {
            "RateLimit-Limit": str(self.per_min),
            "RateLimit-Remaining": str(max(0, remaining)),
            "RateLimit-Reset": str(reset_in),
            "RateLimit-Policy": f"{self.per_min};w={WINDOW_S}",
        }
        if not allowed:
            headers["Retry-After"] = str(max(1, reset_in))
        return allowed, headers
