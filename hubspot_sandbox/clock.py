"""The simulator's clock: real time plus an offset that tests move (no real sleeping).

Retention, token and URL expiry, `occurredAt` of recorded changes and the webhook retry
schedule all read this clock, so "six hours of changes, then a day of failed pushes"
takes as long as the test takes to say it.
"""

from __future__ import annotations

import threading
import time


class SimClock:
    """now() = time.time() + offset; `advance` and `set_offset` move it."""

    def __init__(self, offset_seconds: float = 0.0) -> None:
        self._offset = offset_seconds
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    @property
    def offset(self) -> float:
        with self._lock:
            return self._offset

    def advance(self, seconds: float) -> float:
        """Move forward (never back); returns the new now()."""
        with self._lock:
            self._offset += max(0.0, seconds)
        return self.now()

    def set_offset(self, seconds: float) -> None:
        with self._lock:
            self._offset = seconds
