"""The workspace rate limiter: a sliding minute window and a daily counter.

- Minute: at most `per_minute` counted requests in any window of
  `minute_window_seconds` (sliding, the stricter reading of "per minute").
- Day: at most `daily` counted requests per day; days are consecutive blocks of
  `day_seconds` since the epoch, so the default 86400 resets at 00:00 UTC.
- `X-RateLimit-*` describe the daily quota only (reference §3): Limit = daily
  quota, Remaining = what is left today, Reset = epoch seconds of the next day.

Pure bookkeeping: times are passed in, the caller holds the sandbox lock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from leadlex_sandbox.config import SandboxConfig


@dataclass(frozen=True)
class Quota:
    """What the X-RateLimit-* headers say."""

    limit: int
    remaining: int
    reset: int  # epoch seconds of the next day boundary

    def headers(self) -> dict[str, str]:
        """The three X-RateLimit-* headers."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


@dataclass(frozen=True)
class Block:
    """A refusal: which limit and how many seconds until a request would pass."""

    limit: str  # "minute" or "daily"
    retry_after: int


class RateLimiter:
    """Counts requests against the minute window and the day."""

    def __init__(self) -> None:
        self._hits: deque[float] = deque()
        self._day = -1
        self._day_count = 0

    def reset(self) -> None:
        """Forget every counted request."""
        self._hits.clear()
        self._day = -1
        self._day_count = 0

    def check(self, now: float, config: SandboxConfig) -> Block | None:
        """None when a request may pass now, else the Block (the longer wait wins)."""
        self._roll(now, config)
        blocks: list[Block] = []
        if self._day_count >= config.daily_limit:
            wait = next_day(now, config.day_seconds) - now
            blocks.append(Block("daily", max(1, math.ceil(wait))))
        if len(self._hits) >= config.minute_limit:
            # The slot frees when enough of the oldest hits leave the window.
            oldest_needed = self._hits[len(self._hits) - config.minute_limit]
            wait = oldest_needed + config.minute_window_seconds - now
            blocks.append(Block("minute", max(1, math.ceil(wait))))
        return max(blocks, key=lambda b: b.retry_after) if blocks else None

    def record(self, now: float, config: SandboxConfig) -> None:
        """Count one request."""
        self._roll(now, config)
        self._hits.append(now)
        self._day_count += 1

    def quota(self, now: float, config: SandboxConfig) -> Quota:
        """The daily quota as the headers report it."""
        self._roll(now, config)
        return Quota(
            limit=config.daily_limit,
            remaining=max(0, config.daily_limit - self._day_count),
            reset=next_day(now, config.day_seconds),
        )

    def usage(self, now: float, config: SandboxConfig) -> dict[str, int]:
        """Counters for the control endpoint."""
        self._roll(now, config)
        return {"minute_used": len(self._hits), "daily_used": self._day_count}

    def _roll(self, now: float, config: SandboxConfig) -> None:
        day = int(now // config.day_seconds)
        if day != self._day:
            self._day = day
            self._day_count = 0
        horizon = now - config.minute_window_seconds
        while self._hits and self._hits[0] <= horizon:
            self._hits.popleft()


def next_day(now: float, day_seconds: int) -> int:
    """Epoch seconds of the next day boundary after `now`."""
    return (int(now // day_seconds) + 1) * day_seconds
