"""Per-client token buckets: a client may send ``burst`` requests at once and ``rate_per_s`` sustained.

Memory stays bounded without a background thread: buckets live in an LRU ordered by last use,
and a bucket idle for ``burst / rate_per_s`` seconds is full again, i.e. indistinguishable from a
new one, so such buckets are dropped whenever a new client arrives. If ``max_clients`` buckets
are all busy, the least recently used one is dropped anyway (that client gets a fresh burst).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from activity_settings import Settings
from serving.problems import RATE_LIMITED, Problem


class RateLimiter:
    """Thread-safe; ``check`` costs about a microsecond. ``clock`` is injectable for tests."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate_per_s > 0, burst >= 1 and max_clients >= 1 are required")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.max_clients = max_clients
        self.refill_s = self.burst / self.rate  # idle this long = a full bucket
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # client -> [tokens, last update]

    @classmethod
    def from_settings(
        cls, settings: Settings, *, max_clients: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> RateLimiter:
        """The limiter configured by ``serving.rate_limit_per_s`` and ``serving.rate_limit_burst``."""
        serving = settings.serving
        return cls(serving.rate_limit_per_s, serving.rate_limit_burst, max_clients=max_clients, clock=clock)

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, client_id: str, cost: float = 1.0) -> None:
        """Spend ``cost`` tokens of ``client_id``'s bucket, or raise ``Problem(429)`` with ``retry_after``."""
        if not 0 < cost <= self.burst:
            raise ValueError(f"cost must be in (0, burst={self.burst:g}], got {cost}")
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(client_id)
            if bucket is None:
                self._make_room(now)
                bucket = self._buckets[client_id] = [self.burst, now]
            else:
                self._buckets.move_to_end(client_id)
                elapsed = max(0.0, now - bucket[1])  # a clock that steps back must not drain the bucket
                bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
                bucket[1] = now
            if bucket[0] >= cost:
                bucket[0] -= cost
                return
            wait = (cost - bucket[0]) / self.rate
        raise Problem(
            429,
            "Too many requests",
            f"Rate limit is {self.rate:g} requests/s with bursts of {self.burst:g}; retry later.",
            type=RATE_LIMITED,
            retry_after=wait,
        )

    def sweep(self) -> int:
        """Drop every bucket that has refilled completely; returns how many. (Also done on insert.)"""
        with self._lock:
            before = len(self._buckets)
            self._drop_idle(self._clock())
            return before - len(self._buckets)

    def _make_room(self, now: float) -> None:
        self._drop_idle(now)
        while len(self._buckets) >= self.max_clients:
            self._buckets.popitem(last=False)

    def _drop_idle(self, now: float) -> None:
        # Ordered by last use, so the idle ones are at the front: amortised O(1) per insert.
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if now - oldest[1] < self.refill_s:
                break
            buckets.popitem(last=False)
