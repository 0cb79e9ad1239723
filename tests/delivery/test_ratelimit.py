"""worker.ratelimit against a real Redis (tests/conftest.py), on a fake clock unless noted."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from worker.leadlex import RateInfo
from worker.ratelimit import (
    CIRCUIT_KEY,
    DAY_KEY,
    MINUTE_KEY,
    PAUSE_KEY,
    Budget,
    Circuit,
    next_utc_midnight,
    utc_day,
)

MIDNIGHT = 1_708_905_600.0  # 2024-02-26T00:00:00Z
T0 = MIDNIGHT - 3_600.0  # 23:00 UTC the day before


class FakeClock:
    """A settable clock: `clock()` returns `now`."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at 23:00 UTC, one hour before a daily reset."""
    return FakeClock()


def make_budget(
    client: redis.Redis, clock: FakeClock, per_minute: int = 3, daily: int = 100
) -> Budget:
    """A budget with the default 60 s window and a 1 s safety margin on the fake clock."""
    return Budget(client, per_minute, daily, safety_seconds=1.0, clock=clock)


# ---- per-minute sliding window -----------------------------------------------------------


def test_n_grants_then_refusal_with_retry_at(redis_client: redis.Redis, clock: FakeClock) -> None:
    """per_minute grants succeed; the next is refused until the oldest leaves window + safety."""
    budget = make_budget(redis_client, clock)
    for _ in range(3):
        assert budget.acquire().ok
        clock.advance(1)
    grant = budget.acquire()
    assert not grant.ok
    assert grant.reason == "minute"
    assert grant.retry_at == pytest.approx(T0 + 61)
    status = budget.status()
    assert (status.minute_used, status.daily_used) == (3, 3)  # the refusal recorded nothing


def test_window_slides(redis_client: redis.Redis, clock: FakeClock) -> None:
    """A slot frees exactly when the oldest call is window + safety old, one at a time."""
    budget = make_budget(redis_client, clock)
    for _ in range(3):
        assert budget.acquire().ok
        clock.advance(10)
    clock.now = T0 + 60.999
    assert not budget.acquire().ok
    clock.now = T0 + 61
    assert budget.acquire().ok
    refused = budget.acquire()
    assert not refused.ok
    assert refused.retry_at == pytest.approx(T0 + 10 + 61)


def test_lowered_per_minute_waits_for_enough_entries_to_leave(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """With more calls in the window than a (lowered) limit, retry_at waits for the right one."""
    for i in range(5):
        clock.now = T0 + i
        assert make_budget(redis_client, clock, per_minute=5).acquire().ok
    refused = make_budget(redis_client, clock, per_minute=2).acquire()
    assert refused.retry_at == pytest.approx(T0 + 3 + 61)


def test_release_gives_a_grant_back_once(redis_client: redis.Redis, clock: FakeClock) -> None:
    """release() returns an unsent call to the minute window and the day, exactly once."""
    budget = make_budget(redis_client, clock, per_minute=1)
    grant = budget.acquire()
    assert grant.ok
    assert not budget.acquire().ok
    assert budget.release()  # this thread's last grant
    assert not budget.release(grant)
    status = budget.status()
    assert (status.minute_used, status.daily_used) == (0, 0)
    assert budget.acquire().ok


# ---- daily quota -------------------------------------------------------------------------


def test_daily_limit_and_utc_midnight_reset(redis_client: redis.Redis, clock: FakeClock) -> None:
    """After daily_limit grants the day is refused until 00:00 UTC, when a new day starts."""
    budget = make_budget(redis_client, clock, per_minute=100, daily=5)
    for _ in range(5):
        assert budget.acquire().ok
    grant = budget.acquire()
    assert (grant.ok, grant.reason, grant.retry_at) == (False, "daily", MIDNIGHT)
    assert budget.status().daily_remaining == 0
    ttl = redis_client.ttl(DAY_KEY.format(day=utc_day(T0)))
    assert 0 < ttl <= 2 * 86_400
    clock.now = MIDNIGHT
    assert budget.acquire().ok
    status = budget.status()
    assert (status.daily_used, status.daily_remaining) == (1, 4)
    assert status.reset_at == MIDNIGHT + 86_400


def test_utc_helpers() -> None:
    """utc_day and next_utc_midnight use UTC dates."""
    assert utc_day(MIDNIGHT - 1) == "20240225"
    assert utc_day(MIDNIGHT) == "20240226"
    assert next_utc_midnight(MIDNIGHT - 1) == MIDNIGHT
    assert next_utc_midnight(MIDNIGHT) == MIDNIGHT + 86_400


def test_observe_smaller_remaining_lowers_what_is_left(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """The server's Remaining wins: fewer left than we counted means fewer grants today."""
    budget = make_budget(redis_client, clock, per_minute=100, daily=100)
    for _ in range(2):
        assert budget.acquire().ok
    budget.observe(RateInfo(limit=100, remaining=3, reset=int(MIDNIGHT)))
    status = budget.status()
    assert (status.daily_used, status.daily_remaining) == (97, 3)
    assert [budget.acquire().ok for _ in range(4)] == [True, True, True, False]


def test_observe_adopts_the_server_daily_limit_for_the_day(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """A Limit differing from the configured daily limit is used for the rest of the day."""
    budget = make_budget(redis_client, clock, per_minute=50, daily=100)
    budget.observe(RateInfo(limit=1000, remaining=990, reset=int(MIDNIGHT)))
    status = budget.status()
    assert (status.daily_limit, status.daily_used, status.daily_remaining) == (1000, 10, 990)
    budget.observe(RateInfo(limit=None, remaining=900, reset=None))
    assert budget.status().daily_used == 100  # limit remembered for the day


def test_observe_ignores_minute_shaped_headers_for_the_day(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """A Limit equal to per_minute describes the minute window and must not shrink the day."""
    budget = make_budget(redis_client, clock, per_minute=10, daily=100)
    budget.observe(RateInfo(limit=10, remaining=9, reset=int(T0 + 60)))
    status = budget.status()
    assert (status.daily_limit, status.daily_used) == (100, 0)


def test_observe_remaining_zero_pauses_until_reset(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """Remaining 0 with a Reset pauses every worker until the reset (reason daily)."""
    budget = make_budget(redis_client, clock)
    budget.observe(RateInfo(limit=100, remaining=0, reset=int(MIDNIGHT)))
    assert budget.paused_until() == (MIDNIGHT, "daily")
    other = make_budget(redis_client, clock)  # another worker
    grant = other.acquire()
    assert (grant.ok, grant.reason, grant.retry_at) == (False, "paused", MIDNIGHT)
    status = other.status()
    assert (status.paused_until, status.pause_reason, status.daily_remaining) == (
        MIDNIGHT,
        "daily",
        0,
    )
    clock.now = MIDNIGHT
    assert other.paused_until() == (0.0, "")
    assert other.acquire().ok


# ---- 429 ---------------------------------------------------------------------------------


def test_on_rate_limited_uses_retry_after(redis_client: redis.Redis, clock: FakeClock) -> None:
    """A 429 with Retry-After pauses all workers until now + Retry-After."""
    budget = make_budget(redis_client, clock)
    end = budget.on_rate_limited(RateInfo(retry_after=30.0))
    assert end == pytest.approx(T0 + 30)
    assert budget.paused_until() == (pytest.approx(T0 + 30), "retry_after")
    assert make_budget(redis_client, clock).acquire().reason == "paused"


def test_on_rate_limited_uses_reset_when_remaining_is_zero(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """Without Retry-After, Remaining 0 pauses until X-RateLimit-Reset (the daily reset)."""
    budget = make_budget(redis_client, clock)
    assert budget.on_rate_limited(RateInfo(limit=100, remaining=0, reset=int(MIDNIGHT))) == MIDNIGHT
    assert budget.paused_until() == (MIDNIGHT, "daily")
    assert budget.status().daily_remaining == 0


def test_on_rate_limited_waits_for_the_minute_window(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """Otherwise the pause ends when our oldest call leaves the window, within [now+1, now+60]."""
    budget = make_budget(redis_client, clock, per_minute=10)
    assert budget.acquire().ok
    clock.advance(10)
    assert budget.acquire().ok
    clock.advance(10)
    assert budget.on_rate_limited(RateInfo(limit=100, remaining=50)) == pytest.approx(T0 + 61)
    assert budget.paused_until()[1] == "minute"


def test_on_rate_limited_minute_bounds(redis_client: redis.Redis, clock: FakeClock) -> None:
    """The minute pause is at least 1 s and, with nothing in our window, a whole window."""
    budget = make_budget(redis_client, clock, per_minute=10)
    assert budget.on_rate_limited(RateInfo()) == pytest.approx(T0 + 60)
    redis_client.delete(PAUSE_KEY)
    clock.now = T0 + 100
    assert budget.acquire().ok
    clock.advance(60.5)  # the oldest call frees at +61, only 0.5 s away
    assert budget.on_rate_limited(RateInfo()) == pytest.approx(clock.now + 1)


def test_on_rate_limited_never_shortens_a_longer_pause(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """A shorter pause from a later 429 leaves the longer one in force."""
    budget = make_budget(redis_client, clock)
    assert budget.on_rate_limited(RateInfo(retry_after=120.0)) == pytest.approx(T0 + 120)
    assert budget.on_rate_limited(RateInfo(retry_after=5.0)) == pytest.approx(T0 + 120)
    assert budget.on_rate_limited(RateInfo()) == pytest.approx(T0 + 120)
    assert budget.paused_until() == (pytest.approx(T0 + 120), "retry_after")
    assert budget.on_rate_limited(RateInfo(retry_after=300.0)) == pytest.approx(T0 + 300)
    budget.clear_pause()
    assert budget.paused_until() == (0.0, "")


# ---- concurrency (real clock) ------------------------------------------------------------


def test_concurrent_workers_get_exactly_per_minute_grants(redis_url: str) -> None:
    """8 threads, each its own connection, racing 50 acquires each: exactly 10 are granted."""
    start = threading.Barrier(8)
    granted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        client = redis.Redis.from_url(redis_url)
        budget = Budget(client, 10, 10_000)
        start.wait(timeout=5)
        ok = sum(budget.acquire().ok for _ in range(50))
        with lock:
            granted.append(ok)
        client.close()

    began = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert time.monotonic() - began < 10
    assert len(granted) == 8
    assert sum(granted) == 10
    check = redis.Redis.from_url(redis_url)
    assert check.zcard(MINUTE_KEY) == 10
    assert Budget(check, 10, 10_000).status().daily_used == 10
    check.close()


# ---- circuit -----------------------------------------------------------------------------


def test_circuit_open_and_close(redis_client: redis.Redis, clock: FakeClock) -> None:
    """open() stops delivery for every worker with its reason; close() resumes it."""
    a = Circuit(redis_client, probe_interval=180, clock=clock)
    b = Circuit(redis_client, probe_interval=180, clock=clock)
    assert not b.state().open
    a.open("invalid_key", "leadlex 401 invalid_key: Invalid API key")
    state = b.state()
    assert (state.open, state.reason, state.since, state.next_probe_at) == (
        True,
        "invalid_key",
        T0,
        T0 + 180,
    )
    assert state.detail.startswith("leadlex 401")
    clock.advance(5)
    a.open("insufficient_permissions")
    assert b.state().since == T0  # the first opening is kept
    assert b.state().reason == "insufficient_permissions"
    b.close()
    assert not a.state().open
    assert not a.is_open()
    assert not redis_client.exists(CIRCUIT_KEY)


def test_probe_due_once_per_interval_across_workers(
    redis_client: redis.Redis, clock: FakeClock
) -> None:
    """While open, exactly one of two workers gets probe_due() per interval; none when closed."""
    a = Circuit(redis_client, probe_interval=180, clock=clock)
    b = Circuit(redis_client, probe_interval=180, clock=clock)
    assert not a.probe_due()  # closed: nothing to probe
    a.open("invalid_key")
    assert (a.probe_due(), b.probe_due()) == (False, False)  # the failing call was the probe
    clock.advance(180)
    assert [a.probe_due(), b.probe_due(), a.probe_due()] == [True, False, False]
    clock.advance(179)
    assert not b.probe_due()
    clock.advance(1)
    assert [b.probe_due(), a.probe_due()] == [True, False]
    assert b.state().next_probe_at == pytest.approx(clock.now + 180)
    a.close()
    clock.advance(1_000)
    assert not b.probe_due()
