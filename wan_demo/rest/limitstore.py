"""A `limits` storage whose hits are counted in the job store (jobs/store/sql_ops.py: the `rate_hits`
table), so every API node on one database shares each key's moving window: a node sees every
other node's counted submits and, as held hits, the submits in flight there (rest/ratelimit.py).
Only the moving-window strategy (rest/ratelimit.py's) is supported; the plain counter methods
`limits` requires of every storage answer from the same table.

`limits` registers storages by URI scheme; this one has none (it is built around an open JobStore,
not from a URI), and its errors are the store's: StoreUnavailable (REST answers 503).
"""

from __future__ import annotations

from limits.storage import MovingWindowSupport, Storage

from wan_demo.jobs.common import StoreUnavailable
from wan_demo.jobs.store.base import JobStore


class JobStoreStorage(Storage, MovingWindowSupport):
    STORAGE_SCHEME = None  # not reachable by URI: built around an open job store

    def __init__(self, store: JobStore):
        super().__init__(wrap_exceptions=False)
        self.store = store

    @property
    def base_exceptions(self) -> type[Exception]:
        return StoreUnavailable

    # -- the moving window: what MovingWindowRateLimiter calls -------------------------------------
    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return self.store.rate_acquire(key, limit, float(expiry), amount)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        return self.store.rate_window(key, float(expiry))

    # -- reservations (not in `limits`): hits a submit in flight holds until its answer is known -----
    def reserve(self, key: str, limit: int, expiry: int, amount: int, hold: str) -> bool:
        """acquire_entry, with the hits tagged `hold` so `release` can take them back."""
        return self.store.rate_acquire(key, limit, float(expiry), amount, hold)

    def release(self, key: str, hold: str) -> None:
        self.store.rate_release(key, hold)

    # -- the rest of `limits`' Storage interface ---------------------------------------------------
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Count `amount` hits whatever the limit (fixed-window strategies); returns the window's count."""
        self.store.rate_acquire(key, 2**31 - 1, float(expiry), amount)
        return self.store.rate_window(key, float(expiry))[1]

    def get(self, key: str) -> int:
        return self.store.rate_window(key, float(24 * 3600))[1]

    def get_expiry(self, key: str) -> float:
        return self.store.rate_window(key, float(24 * 3600))[0]

    def check(self) -> bool:
        try:
            self.store.ping()
        except StoreUnavailable:
            return False
        return True

    def reset(self) -> int | None:
        return None  # the sweeper forgets old hits (jobs/store/sql_ops.py _forget_hits)

    def clear(self, key: str) -> None:
        self.store.rate_clear(key)
