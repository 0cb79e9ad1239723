"""SandboxState: the one lock and everything it guards (store, limiter, log, config, dice).

Every API request runs its whole decision (auth, limits, faults, the write, the
log entry) under `lock`, so concurrent clients see a serial LeadLex. The config
is swapped, never mutated, so a snapshot taken under the lock stays consistent.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from leadlex_sandbox.config import SandboxConfig
from leadlex_sandbox.idempotency import IdempotencyCache
from leadlex_sandbox.limits import RateLimiter
from leadlex_sandbox.requestlog import RequestIds, RequestLog
from leadlex_sandbox.store import ContactStore


class SandboxState:
    """The simulated workspace: contacts, quota, request log, current config."""

    def __init__(
        self, config: SandboxConfig | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.lock = threading.RLock()
        self.initial_config = config or SandboxConfig()
        self.config = self.initial_config
        self.clock = clock
        self.store = ContactStore()
        self.limiter = RateLimiter()
        self.log = RequestLog()
        self.ids = RequestIds()
        self.idempotency = IdempotencyCache()
        self.export_hits: deque[float] = deque()  # times of exports in the export window
        self.late_timers: list[threading.Timer] = []  # writes waiting for late_apply_seconds
        self.rng = random.Random(self.config.seed)

    def reset(self, *, keep_config: bool = False) -> None:
        """Empty the workspace; restore the start-up config unless `keep_config`."""
        with self.lock:
            for timer in self.late_timers:
                timer.cancel()
            self.late_timers.clear()
            self.store.clear()
            self.limiter.reset()
            self.export_hits.clear()
            self.log.clear()
            self.idempotency.clear()
            if not keep_config:
                self.config = self.initial_config
            self.rng.seed(self.config.seed)

    def configure(
        self, changes: Mapping[str, Any], allowed: frozenset[str] | None = None
    ) -> SandboxConfig:
        """Apply knob changes (ConfigError on a bad one) and return the new config."""
        with self.lock:
            self.config = self.config.updated(changes, allowed=allowed)
            if "seed" in changes:
                self.rng.seed(self.config.seed)
            return self.config

    def usage(self) -> dict[str, int]:
        """Quota counters and limits, for the control endpoint."""
        with self.lock:
            now = self.clock()
            config = self.config
            quota = self.limiter.quota(now, config)
            return {
                "per_minute": config.minute_limit,
                "daily": config.daily_limit,
                **self.limiter.usage(now, config),
                "daily_remaining": quota.remaining,
                "reset": quota.reset,
            }
