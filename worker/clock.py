"""The fleet's one clock: Redis `TIME`.

Every decision that compares a time written by one process with a time read by another
(the rate budget, pauses, the circuit's probe schedule, due times, the pump, retry age,
the inbox sweep, when a PATCH was sent) uses the Redis server's clock, never a worker
machine's: worker clocks drift and can be seconds apart, Redis has one clock for all.

- The budget and the circuit (worker.ratelimit) read `TIME` inside their Lua scripts, or
  once per operation: exact.
- The pipeline's `Runtime.clock` is a `RedisClock`: Redis `TIME` read at most once per
  `resync_seconds` and carried forward in between with this machine's *monotonic* clock
  (which measures elapsed time and never jumps when the wall clock is set or wrong).
  Its error is half a round trip plus the monotonic drift over one second (parts per
  million): well under a millisecond, at no Redis round trip on the hot path.

Relative waits (lock and lease TTLs, Celery countdowns) are durations measured by Redis or
by the machine's monotonic clock, so they need no common clock. See docs/architecture.md
("One clock").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

__all__ = ["RedisClock", "redis_time"]


def redis_time(client: redis.Redis) -> float:
    """The Redis server's clock, epoch seconds (one `TIME` round trip)."""
    seconds, micros = client.time()
    return int(seconds) + int(micros) / 1_000_000


class RedisClock:
    """Epoch seconds on the Redis server's clock, without a round trip per reading.

    Calling the clock returns `anchor + (monotonic() - anchor_monotonic)`, where the anchor
    is a Redis `TIME` reading taken at the midpoint of its round trip, renewed once the
    last one is `resync_seconds` old. Thread-safe; a Redis error propagates (every caller
    is about to use Redis anyway and is retried when Redis is down).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        resync_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if resync_seconds < 0:
            raise ValueError("resync_seconds must be >= 0")
        self.redis = client
        self.resync_seconds = resync_seconds
        self._monotonic = monotonic
        self._anchor: tuple[float, float] | None = None  # (redis time, monotonic at it)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        anchor = self._anchor
        now_mono = self._monotonic()
        if anchor is None or now_mono - anchor[1] >= self.resync_seconds:
            anchor = self.sync()
            now_mono = self._monotonic()
        return anchor[0] + (now_mono - anchor[1])

    def sync(self) -> tuple[float, float]:
        """Read Redis `TIME` now; returns the new anchor (redis time, monotonic)."""
        with self._lock:
            before = self._monotonic()
            server = redis_time(self.redis)
            after = self._monotonic()
            anchor = (server, (before + after) / 2)
            self._anchor = anchor
            return anchor
