"""One clock (DESIGN invariant 6): the budget, the circuit and the pipeline's Runtime decide
on Redis's clock, never the worker machine's (worker.clock, worker.ratelimit)."""

from __future__ import annotations

import calendar
import random
import time

import pytest
import redis

from worker.clock import RedisClock, redis_time
from worker.ratelimit import (
    _CLOCK_LUA,
    DAY_KEY,
    MINUTE_KEY,
    Budget,
    Circuit,
    GrantLapsedError,
    utc_day,
)


class SteppingMonotonic:
    """A fake monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lua_utc_day_matches_pythons_calendar(redis_client: redis.Redis) -> None:
    """The scripts' own UTC date (days-to-civil in Lua) equals Python's for every kind of day:
    leap days, century years, the last second before midnight, year ends."""
    script = redis_client.register_script(_CLOCK_LUA + "return utc_day(tonumber(ARGV[1]))")
    rng = random.Random(10)
    moments = [
        calendar.timegm((2024, 2, 29, 12, 0, 0)),
        calendar.timegm((2000, 2, 29, 0, 0, 0)),
        calendar.timegm((2100, 3, 1, 0, 0, 0)),
        calendar.timegm((2026, 12, 31, 23, 59, 59)) + 0.999,
        calendar.timegm((2027, 1, 1, 0, 0, 0)),
        calendar.timegm((1970, 1, 1, 0, 0, 0)),
        *[rng.uniform(0, 4_102_444_800) for _ in range(300)],
    ]
    for moment in moments:
        assert script(args=[f"{moment:.6f}"]).decode() == utc_day(moment), moment


def test_grants_are_stamped_with_redis_time_not_the_callers_clock(
    redis_client: redis.Redis,
) -> None:
    """Without a test clock, acquire() records Redis TIME and counts on Redis's UTC day."""
    budget = Budget(redis_client, 5, 100)
    before = redis_time(redis_client)
    grant = budget.acquire()
    after = redis_time(redis_client)
    assert grant.ok
    assert before <= grant.retry_at <= after
    day = utc_day(grant.retry_at)
    assert grant.token.startswith(f"{day}:")
    assert redis_client.hget(DAY_KEY.format(day=day), "used") == b"1"
    score = redis_client.zscore(MINUTE_KEY, grant.token)
    assert score == pytest.approx(grant.retry_at, abs=1e-6)
    assert budget.release(grant) is True
    assert redis_client.zcard(MINUTE_KEY) == 0


def test_budget_refusal_and_circuit_probe_use_redis_time(redis_client: redis.Redis) -> None:
    """A refused grant's retry_at and the circuit's probe schedule are on Redis's clock."""
    budget = Budget(redis_client, 1, 100, window_seconds=30, safety_seconds=1)
    first = budget.acquire()
    refused = budget.acquire()
    assert not refused.ok
    assert refused.reason == "minute"
    assert refused.retry_at == pytest.approx(first.retry_at + 31, abs=1e-3)
    circuit = Circuit(redis_client, probe_interval=60)
    circuit.open("unauthorized")
    state = circuit.state()
    assert abs(state.since - redis_time(redis_client)) < 5
    assert state.next_probe_at == pytest.approx(state.since + 60, abs=1e-3)
    assert circuit.probe_due() is False


def test_redis_clock_reads_time_once_per_resync_and_follows_monotonic(
    redis_client: redis.Redis,
) -> None:
    """RedisClock anchors on Redis TIME, carries it forward with the monotonic clock and
    reads TIME again only when the anchor is `resync_seconds` old."""
    mono = SteppingMonotonic()
    clock = RedisClock(redis_client, resync_seconds=1.0, monotonic=mono)
    first = clock()
    assert abs(first - redis_time(redis_client)) < 1
    anchor = clock._anchor
    mono.now += 0.5
    assert clock() == pytest.approx(first + 0.5)
    assert clock._anchor is anchor  # no round trip yet
    mono.now += 0.6
    clock()
    assert clock._anchor is not anchor  # resynced after 1 s


def test_redis_clock_ignores_a_wrong_wall_clock(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine whose wall clock is an hour off still reads Redis's time."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    clock = RedisClock(redis_client)
    assert abs(clock() - redis_time(redis_client)) < 1


class StepClock:
    """A settable test clock for the budget."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_confirmed_grant_counts_until_its_flight_bound_then_until_its_answer(
    redis_client: redis.Redis,
) -> None:
    """confirm() dates the entry to the latest moment the call can reach LeadLex (now +
    flight); landed() with an answer lowers it to the confirm stamp + the call's duration;
    without an answer it keeps the flight bound."""
    clock = StepClock(1_000_000.0)
    budget = Budget(redis_client, 2, 100, window_seconds=10, flight_seconds=32, clock=clock)
    grant = budget.acquire()
    clock.now += 0.5
    budget.confirm()
    assert redis_client.zscore(MINUTE_KEY, grant.token) == pytest.approx(1_000_032.5)
    budget.landed(answered=True)
    score = redis_client.zscore(MINUTE_KEY, grant.token)
    assert score is not None
    assert 1_000_000.5 <= score < 1_000_000.5 + 1.0  # + the (tiny) real duration
    lost = budget.acquire()
    budget.confirm()
    budget.landed(answered=False)
    assert redis_client.zscore(MINUTE_KEY, lost.token) == pytest.approx(1_000_032.5)


def test_a_call_in_flight_holds_its_slot_past_the_window(redis_client: redis.Redis) -> None:
    """While a call has no answer, a grant one window later is refused: the call may still
    be on its way to LeadLex."""
    clock = StepClock(1_000_000.0)
    budget = Budget(redis_client, 1, 100, window_seconds=10, flight_seconds=32, clock=clock)
    assert budget.acquire().ok
    budget.confirm()
    clock.now += 11
    refused = budget.acquire()
    assert not refused.ok
    assert refused.retry_at == pytest.approx(1_000_032.0 + 10.1)


def test_a_stalled_grant_moves_to_when_the_call_really_leaves(redis_client: redis.Redis) -> None:
    """A call leaving 20 s after its grant is logged at that moment, so the window it lands
    in counts it."""
    clock = StepClock(1_000_000.0)
    budget = Budget(redis_client, 2, 100, window_seconds=10, flight_seconds=5, clock=clock)
    grant = budget.acquire()
    clock.now += 20
    budget.confirm()
    assert redis_client.zscore(MINUTE_KEY, grant.token) == pytest.approx(1_000_025.0)
    other = Budget(redis_client, 2, 100, window_seconds=10, clock=clock)
    assert other.acquire().ok
    assert not other.acquire().ok  # the stalled call holds a slot of the current window


def test_a_stalled_grant_without_a_free_slot_is_given_back_and_refused(
    redis_client: redis.Redis,
) -> None:
    """When the window filled up during the stall, the call must not be made: the grant is
    given back (minute and day) and GrantLapsedError says when a slot frees."""
    clock = StepClock(1_000_000.0)
    stalled = Budget(redis_client, 2, 100, window_seconds=10, safety_seconds=1, clock=clock)
    grant = stalled.acquire()
    clock.now += 12  # the grant left the window meanwhile
    others = Budget(redis_client, 2, 100, window_seconds=10, safety_seconds=1, clock=clock)
    assert others.acquire().ok
    assert others.acquire().ok
    with pytest.raises(GrantLapsedError) as lapsed:
        stalled.confirm()
    assert lapsed.value.retry_at == pytest.approx(1_000_012.0 + 11)
    assert redis_client.zscore(MINUTE_KEY, grant.token) is None
    assert redis_client.hget(DAY_KEY.format(day=utc_day(clock.now)), "used") == b"2"
    assert stalled.release() is False  # already given back
    stalled.confirm()  # confirmed once: nothing left to do
