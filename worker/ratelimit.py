"""One LeadLex call budget shared by every worker on every machine, kept in Redis.

LeadLex allows a workspace 10/50/200 calls a minute and 100/1,000/10,000 a day (daily
counters reset at 00:00 UTC). Every worker takes a grant from `Budget.acquire()` before
each call; a refused grant says when to try again (`retry_at`), so the caller can wait
(short) or park the work (long, DESIGN invariant 7). All decisions are Lua scripts, so
concurrent workers can never both take the last slot.

Redis keys
    lls:budget:minute           ZSET  one member per granted call (score = grant time, epoch s)
    lls:budget:day:{YYYYMMDD}   HASH  used = calls granted that UTC day; limit = the daily
                                      limit the server reported for that day (optional);
                                      expires two days after the last write
    lls:budget:pause            HASH  until (epoch s), reason: every worker waits until then
    lls:circuit                 HASH  open, reason, detail, since, next_probe_at (see Circuit)

Per-minute: a sliding-window log. LeadLex does not say how its minute window works
(reference §12 gap 5), and its X-RateLimit-* headers describe the daily quota only
(reference §3), so nothing the server says tells us where a call sits in its minute.
Each entry of the log is therefore the latest moment its call can have reached LeadLex,
on Redis's clock (issue 14, replacing a fixed 1 s margin):
  - taken (`acquire`): the grant time; the script refuses a grant when `per_minute`
    entries lie within `window_seconds + safety_seconds` before now;
  - leaving (`confirm`, right before the request): now + `flight_seconds`, the longest a
    request can take to reach LeadLex with the client's timeouts;
  - answered (`landed`, any HTTP answer, 2xx or not): the confirm stamp + the time the
    call took on this machine's monotonic clock. The server counted the call between
    those two moments, so the entry is an upper bound of its arrival; a call without an
    answer (timeout, dropped connection) keeps the flight bound.
Then any two calls the log allows `per_minute` apart reach LeadLex at least
`window_seconds` apart, in a sliding or a fixed-bucket server window alike: the margin
each call adds is its own measured flight time (milliseconds on a healthy network, the
full timeout for a call nobody answered), and `safety_seconds` (LEADLEX_RATE_MARGIN_SECONDS,
default 0.1 s) only covers clock-rate drift and the server's time resolution. Grant times
are Redis `TIME`, read inside the script that decides, so every worker's entries sit on
one clock whatever the worker machines' clocks say (the offset between Redis's and
LeadLex's clocks cancels out: only differences between entries matter). A refused grant
records nothing and its `retry_at` is the moment the blocking entry leaves the window.
The cost is memory of at most `per_minute` (<= 200) members, trimmed on every acquire,
and one more Redis round trip per LeadLex call (`landed`).

Daily: a counter per UTC date of Redis's clock (the script derives the date from `TIME`),
corrected by the server. `observe()` raises "used" to
Limit - `X-RateLimit-Remaining` after every response (the server's number wins when it
is higher: it also counts calls made with the same key by anyone else; it never lowers
our count within one server day, since an answer can be older than calls still in
flight), remembers the server's `X-RateLimit-Reset` (past it, the quota starts again even
if Redis's UTC date has not changed), and pauses everyone until that reset when
Remaining reaches 0.

Late calls: a grant is stamped when taken; a call that leaves much later (the worker
stalled in between) would land outside the window it was counted in. `confirm()`, called
right before each call leaves, re-checks the window at Redis's now (other entries only)
and gives the grant back and refuses the call when the window has filled up meanwhile.

Pause: a 429 pauses every worker (`on_rate_limited`): until Retry-After if given, else
until X-RateLimit-Reset when Remaining is 0, else until our minute window frees. A pause
is never shortened by a later, shorter one; `clear_pause()` is the operator's override.

Clock (DESIGN invariant 6, docs/architecture.md "One clock"): Redis `TIME`, never a
worker's clock. `acquire()` and the circuit read it inside their Lua scripts; the other
operations read it once each (`now()`). A test may pass `clock=` (a fake clock) instead;
the scripts then take that time as an argument and derive the UTC day from it the same
way. Redis TTLs are only garbage collection and never decide anything.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis

from worker.clock import redis_time
from worker.leadlex import RateInfo

__all__ = ["Budget", "BudgetStatus", "Circuit", "CircuitState", "Grant", "GrantLapsedError"]

MINUTE_KEY = "lls:budget:minute"
DAY_KEY = "lls:budget:day:{day}"
DAY_PREFIX = "lls:budget:day:"
PAUSE_KEY = "lls:budget:pause"
CIRCUIT_KEY = "lls:circuit"

DAY_TTL_SECONDS = 2 * 86_400
# Longest pause any server header may impose: up to just past the next daily reset.
MAX_PAUSE_SECONDS = 86_400 + 60

# Lua shared by the scripts that decide on time. clock(arg): arg is a test clock's reading,
# '' means the Redis server's TIME. utc_day(now): YYYYMMDD of epoch seconds in UTC
# (days-to-civil, proleptic Gregorian; tests/delivery/test_ratelimit.py checks it against
# Python's calendar). Reading TIME before writing is allowed: scripts replicate effects.
_CLOCK_LUA = """
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function utc_day(now)
  local z = math.floor(now / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d%02d%02d', y, m, d)
end
"""

# Take one grant. KEYS: minute log, day-record prefix (the day comes from the clock), pause.
# ARGV: test clock ('' = Redis TIME), span, per_minute, default daily limit, day ttl, token,
# minute log ttl ms. Returns {ok, retry_at or grant time, reason, member ('' if refused)}.
_ACQUIRE = (
    _CLOCK_LUA
    + """
local now = clock(ARGV[1])
local span = tonumber(ARGV[2])
local per_minute = tonumber(ARGV[3])
local day = utc_day(now)
local daykey = KEYS[2] .. day
local paused = tonumber(redis.call('HGET', KEYS[3], 'until') or '0')
if paused > now then
  return {0, string.format('%.6f', paused), 'paused', ''}
end
local sreset = tonumber(redis.call('HGET', daykey, 'reset') or '0')
if sreset > 0 and now >= sreset then
  -- the server said its day ends at `reset`: past it, the quota starts again
  redis.call('HSET', daykey, 'used', 0)
  redis.call('HDEL', daykey, 'reset')
  sreset = 0
end
local limit = tonumber(redis.call('HGET', daykey, 'limit') or ARGV[4])
local used = tonumber(redis.call('HGET', daykey, 'used') or '0')
if used >= limit then
  if sreset > 0 then return {0, string.format('%.6f', sreset), 'daily', ''} end
  -- the next 00:00 UTC of this clock (LeadLex's daily reset)
  return {0, string.format('%.6f', (math.floor(now / 86400) + 1) * 86400), 'daily', ''}
end
local stamp = string.format('%.6f', now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now - span))
local count = redis.call('ZCARD', KEYS[1])
if count >= per_minute then
  local idx = count - per_minute
  local entry = redis.call('ZRANGE', KEYS[1], idx, idx, 'WITHSCORES')
  return {0, string.format('%.6f', tonumber(entry[2]) + span), 'minute', ''}
end
local member = day .. ':' .. ARGV[6]
redis.call('ZADD', KEYS[1], stamp, member)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('HINCRBY', daykey, 'used', 1)
redis.call('EXPIRE', daykey, ARGV[5])
return {1, stamp, '', member}
"""
)

# Adopt the server's daily count. KEYS: day record. ARGV: server used, limit, server reset
# ('' = unknown or already past), ttl. Within one server day a count is only ever raised:
# an answer can be older than calls still in flight, and lowering on it would hand out
# calls the server then refuses. A new server day (another reset) takes the server's count.
_OBSERVE = """
local used = tonumber(ARGV[1])
local old = redis.call('HGET', KEYS[1], 'reset')
if (not old) or ARGV[3] == '' or old == ARGV[3] then
  local cur = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
  if cur > used then used = cur end
end
redis.call('HSET', KEYS[1], 'used', used, 'limit', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'reset', ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return used
"""

# A grant's call is about to leave. KEYS: minute log, day-record prefix. ARGV: test clock
# ('' = Redis TIME), span, per_minute, flight seconds, member, minute log ttl ms.
# Returns {1, now} when the call may go (its entry now says the latest moment it can reach
# LeadLex: now + flight), or {0, retry_at} when the window filled up since the grant (the
# worker stalled): the entry and its day count are given back, and the call must not be made.
_CONFIRM = (
    _CLOCK_LUA
    + """
local now = clock(ARGV[1])
local span = tonumber(ARGV[2])
local member = ARGV[5]
redis.call('ZREM', KEYS[1], member)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now - span))
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[3]) then
  local daykey = KEYS[2] .. string.sub(member, 1, 8)
  local used = tonumber(redis.call('HGET', daykey, 'used') or '0')
  if used > 0 then redis.call('HINCRBY', daykey, 'used', -1) end
  local idx = count - tonumber(ARGV[3])
  local entry = redis.call('ZRANGE', KEYS[1], idx, idx, 'WITHSCORES')
  return {0, string.format('%.6f', tonumber(entry[2]) + span)}
end
redis.call('ZADD', KEYS[1], string.format('%.6f', now + tonumber(ARGV[4])), member)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {1, string.format('%.6f', now)}
"""
)

# A call was answered. KEYS: minute log. ARGV: member, latest arrival. Lowers the entry to
# that moment (never raises it; a released or trimmed entry stays gone).
_LANDED = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local used = tonumber(redis.call('HGET', KEYS[2], 'used') or '0')
  if used > 0 then redis.call('HINCRBY', KEYS[2], 'used', -1) end
  return 1
end
return 0
"""

_PAUSE = """
local now = tonumber(ARGV[3])
local cur = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if cur >= tonumber(ARGV[1]) then
  return {string.format('%.6f', cur), redis.call('HGET', KEYS[1], 'reason') or ''}
end
redis.call('HSET', KEYS[1], 'until', ARGV[1], 'reason', ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) - now) + 60)
return {ARGV[1], ARGV[2]}
"""

# KEYS: circuit. ARGV: test clock ('' = Redis TIME), probe interval, reason, detail.
_CIRCUIT_OPEN = (
    _CLOCK_LUA
    + """
local now = clock(ARGV[1])
if redis.call('HGET', KEYS[1], 'open') ~= '1' then
  redis.call('HSET', KEYS[1], 'since', string.format('%.6f', now), 'next_probe_at',
             string.format('%.6f', now + tonumber(ARGV[2])))
end
redis.call('HSET', KEYS[1], 'open', '1', 'reason', ARGV[3], 'detail', ARGV[4])
return 1
"""
)

# KEYS: circuit. ARGV: test clock ('' = Redis TIME), probe interval.
_CIRCUIT_PROBE = (
    _CLOCK_LUA
    + """
if redis.call('HGET', KEYS[1], 'open') ~= '1' then return 0 end
local now = clock(ARGV[1])
local due = tonumber(redis.call('HGET', KEYS[1], 'next_probe_at') or '0')
if now < due then return 0 end
redis.call('HSET', KEYS[1], 'next_probe_at', string.format('%.6f', now + tonumber(ARGV[2])))
return 1
"""
)


def _num(value: float) -> str:
    return f"{value:.6f}"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def utc_day(now: float) -> str:
    """YYYYMMDD of `now` in UTC."""
    return time.strftime("%Y%m%d", time.gmtime(now))


def next_utc_midnight(now: float) -> float:
    """Epoch seconds of the next 00:00 UTC after `now` (LeadLex's daily reset)."""
    return float((math.floor(now / 86_400) + 1) * 86_400)


@dataclass(frozen=True)
class Grant:
    """The answer of `Budget.acquire()`.

    ok: the call may be made now. Otherwise `retry_at` (epoch seconds) is when it can next
    succeed and `reason` says what blocks: "minute", "daily" or "paused". `token` names the
    recorded call for `Budget.release()`.
    """

    ok: bool
    retry_at: float
    reason: str  # "" | "minute" | "daily" | "paused"
    token: str = ""


class GrantLapsedError(Exception):
    """A grant's call was about to leave long after the grant (the worker stalled), and the
    window has no slot now: the call must not be made (it never left; try again later)."""

    def __init__(self, retry_at: float) -> None:
        super().__init__(f"budget grant lapsed; next slot at {retry_at:.3f}")
        self.retry_at = retry_at


@dataclass(frozen=True)
class BudgetStatus:
    """A snapshot of the shared budget, for `leadlex-sync status` and metrics."""

    per_minute: int
    daily_limit: int
    minute_used: int
    daily_used: int
    daily_remaining: int
    reset_at: float
    paused_until: float
    pause_reason: str


class Budget:
    """The shared LeadLex budget: per-minute sliding-window log + daily counter + pause."""

    def __init__(
        self,
        client: redis.Redis,
        per_minute: int,
        daily_limit: int,
        *,
        window_seconds: float = 60.0,
        safety_seconds: float = 0.1,
        flight_seconds: float = 32.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if per_minute < 1 or daily_limit < 1:
            raise ValueError("per_minute and daily_limit must be >= 1")
        if window_seconds <= 0 or safety_seconds < 0 or flight_seconds < 0:
            raise ValueError("window_seconds must be > 0, safety_seconds and flight_seconds >= 0")
        self.redis = client
        self.per_minute = per_minute
        self.daily_limit = daily_limit
        self.window = window_seconds
        self.safety = safety_seconds
        # The longest a request can take to reach LeadLex (the client's timeouts).
        self.flight = flight_seconds
        self.clock = clock  # None: Redis TIME (production); a callable: a test clock
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._confirm = client.register_script(_CONFIRM)
        self._landed = client.register_script(_LANDED)
        self._observe = client.register_script(_OBSERVE)
        self._pause = client.register_script(_PAUSE)
        self._local = threading.local()

    @property
    def span(self) -> float:
        """The length of the sliding window we enforce: window + safety margin."""
        return self.window + self.safety

    def now(self) -> float:
        """The budget's clock: Redis TIME (one round trip), or the test clock if given."""
        return self.clock() if self.clock is not None else redis_time(self.redis)

    def _clock_arg(self) -> str:
        """What the scripts get as their clock: '' (read TIME inside) or a test reading."""
        return "" if self.clock is None else _num(self.clock())

    # ---- taking and giving back -----------------------------------------------------------

    def acquire(self) -> Grant:
        """Take one call from the budget, or say when one will be free (records nothing)."""
        ok, retry_at, reason, token = self._acquire(
            keys=[MINUTE_KEY, DAY_PREFIX, PAUSE_KEY],
            args=[
                self._clock_arg(),
                _num(self.span),
                self.per_minute,
                self.daily_limit,
                DAY_TTL_SECONDS,
                uuid.uuid4().hex,
                math.ceil((self.span + self.flight) * 1000) + 1000,
            ],
        )
        grant = Grant(
            ok=bool(int(ok)),
            retry_at=float(_text(retry_at)),
            reason=_text(reason),
            token=_text(token) if int(ok) else "",
        )
        if grant.ok:
            self._local.last = grant
            self._local.pending = grant
        return grant

    def confirm(self) -> None:
        """Call right before this thread's granted call leaves (the LeadLex client does).

        The entry moves to now + `flight_seconds` (the latest the call can reach LeadLex;
        `landed()` lowers it once the answer says more). A call that leaves long after its
        grant (the worker stalled after `acquire()`: a GC pause, a VM freeze, a slow DNS
        lookup) would otherwise land outside the window its grant was counted in, so the
        window is checked again at Redis's now: when it filled up meanwhile, the grant is
        given back and `GrantLapsedError` is raised: the call must not be made (it never
        left; the caller retries later). One round trip. Each grant is confirmed once;
        without one, nothing to do.
        """
        grant: Grant | None = getattr(self._local, "pending", None)
        self._local.pending = None
        self._local.flying = None
        if grant is None or not grant.token:
            return
        started = time.monotonic()
        ok, when = self._confirm(
            keys=[MINUTE_KEY, DAY_PREFIX],
            args=[
                self._clock_arg(),
                _num(self.span),
                self.per_minute,
                _num(self.flight),
                grant.token,
                math.ceil((self.span + self.flight) * 1000) + 1000,
            ],
        )
        if not int(ok):
            if getattr(self._local, "last", None) is grant:
                self._local.last = None  # given back already: release() must not again
            raise GrantLapsedError(float(_text(when)))
        self._local.flying = (grant.token, float(_text(when)), started)

    def landed(self, answered: bool) -> None:
        """This thread's confirmed call ended: with an HTTP answer (any status) its entry
        drops to the confirm stamp + the time the call took (the server counted it before
        answering); without one (timeout, connection lost) it keeps the flight bound."""
        flying: tuple[str, float, float] | None = getattr(self._local, "flying", None)
        self._local.flying = None
        if flying is None or not answered:
            return
        token, stamp, started = flying
        latest = stamp + (time.monotonic() - started)
        self._landed(keys=[MINUTE_KEY], args=[token, _num(latest)])

    def release(self, grant: Grant | None = None) -> bool:
        """Give a grant back because its call was never sent; True if it was returned.

        Only for failures where the request surely did not leave this machine
        (`LeadLexError` with `status is None and not maybe_applied`: ConnectError,
        ConnectTimeout, PoolTimeout). Never after a 429 or any answer: the server counted
        it. Without an argument, releases this thread's last grant. Releasing twice, or
        after the call left the minute window, does nothing.
        """
        last: Grant | None = getattr(self._local, "last", None)
        target = last if grant is None else grant
        if target is None or not target.ok or not target.token:
            return False
        if last is target:
            self._local.last = None
        day = target.token.split(":", 1)[0]
        done = self._release(keys=[MINUTE_KEY, DAY_KEY.format(day=day)], args=[target.token])
        return bool(int(done))

    # ---- learning from the server ---------------------------------------------------------

    def observe(self, rate: RateInfo) -> None:
        """Adopt the server's view of the daily quota from a response's rate headers.

        used := limit - Remaining (the server's count wins over ours), where limit is
        X-RateLimit-Limit when given (kept for the day) else the configured daily limit.
        Remaining 0 with a Reset pauses every worker until the reset.
        """
        now = self.now()
        scope = self._record_remaining(rate, now)
        if rate.remaining == 0 and rate.reset is not None and rate.reset > now:
            self.pause(min(float(rate.reset), now + MAX_PAUSE_SECONDS), scope or "daily")

    def _record_remaining(self, rate: RateInfo, now: float) -> str:
        """Write the server's count; returns "minute" if the headers describe the minute."""
        if rate.remaining is None:
            return ""
        limit = rate.limit if rate.limit is not None else None
        if limit is not None and limit == self.per_minute and self.per_minute != self.daily_limit:
            # LeadLex's headers describe the daily quota (reference §3); a Limit equal to the
            # per-minute budget means this server reports the minute window instead, so it
            # must not shrink the day to `per_minute` calls.
            return "minute"
        key = DAY_KEY.format(day=utc_day(now))
        if limit is None:
            stored = self.redis.hget(key, "limit")
            limit = int(_text(stored)) if stored is not None else self.daily_limit
        reset = f"{rate.reset}" if rate.reset is not None and rate.reset > now else ""
        self._observe(
            keys=[key], args=[max(0, limit - rate.remaining), limit, reset, DAY_TTL_SECONDS]
        )
        return "daily"

    def on_rate_limited(self, rate: RateInfo) -> float:
        """A 429 arrived: pause every worker; returns when the (possibly longer) pause ends.

        Until now + Retry-After if given (at least 1 s); else until X-RateLimit-Reset when
        Remaining is 0 (next 00:00 UTC if Reset is missing); else until our minute window
        frees (oldest call in it + window + safety, between now + 1 s and now + window).
        """
        now = self.now()
        scope = self._record_remaining(rate, now)
        if rate.retry_after is not None:
            until, reason = now + max(rate.retry_after, 1.0), "retry_after"
        elif rate.remaining == 0 and (rate.reset is None or rate.reset > now):
            # A Reset in the past is stale (clock skew around midnight): use the minute rule.
            reset = next_utc_midnight(now) if rate.reset is None else float(rate.reset)
            until, reason = reset, scope if scope == "minute" else "daily"
        else:
            oldest = self.redis.zrangebyscore(
                MINUTE_KEY, f"({_num(now - self.span)}", "+inf", start=0, num=1, withscores=True
            )
            until = float(oldest[0][1]) + self.span if oldest else now + self.window
            until, reason = min(max(until, now + 1.0), now + self.window), "minute"
        return self.pause(min(until, now + MAX_PAUSE_SECONDS), reason)

    # ---- pause ----------------------------------------------------------------------------

    def pause(self, until: float, reason: str) -> float:
        """Stop every worker until `until` (epoch s); never shortens a longer pause.

        Returns the end of the pause now in force.
        """
        now = self.now()
        end, _ = self._pause(keys=[PAUSE_KEY], args=[_num(until), reason, _num(now)])
        return float(_text(end))

    def paused_until(self) -> tuple[float, str]:
        """(until, reason) of the pause in force, or (0.0, "") when not paused."""
        raw = self.redis.hmget(PAUSE_KEY, ["until", "reason"])
        until = float(_text(raw[0]) or 0)
        if until <= self.now():
            return 0.0, ""
        return until, _text(raw[1])

    def clear_pause(self) -> None:
        """Lift any pause at once (operator override; the next 429 pauses again)."""
        self.redis.delete(PAUSE_KEY)

    # ---- reporting ------------------------------------------------------------------------

    def status(self) -> BudgetStatus:
        """A consistent-enough snapshot of the budget (read-only, two round trips)."""
        now = self.now()
        pipe = self.redis.pipeline(transaction=True)
        pipe.zcount(MINUTE_KEY, f"({_num(now - self.span)}", "+inf")
        pipe.hmget(DAY_KEY.format(day=utc_day(now)), ["used", "limit"])
        pipe.hmget(PAUSE_KEY, ["until", "reason"])
        minute_used, (used, limit), (until, reason) = pipe.execute()
        daily_limit = int(_text(limit) or self.daily_limit)
        daily_used = int(_text(used) or 0)
        paused = float(_text(until) or 0)
        if paused <= now:
            paused, reason = 0.0, None
        return BudgetStatus(
            per_minute=self.per_minute,
            daily_limit=daily_limit,
            minute_used=int(minute_used),
            daily_used=daily_used,
            daily_remaining=max(0, daily_limit - daily_used),
            reset_at=next_utc_midnight(now),
            paused_until=paused,
            pause_reason=_text(reason),
        )


@dataclass(frozen=True)
class CircuitState:
    """Whether delivery is stopped (bad key / missing permission), why, and the next probe."""

    open: bool
    reason: str
    detail: str
    since: float
    next_probe_at: float


class Circuit:
    """A cluster-wide breaker for 401/403: all delivery stops until a probe succeeds.

    `open()` records why (keeping the first `since`); `probe_due()` is True for exactly one
    caller per `probe_interval` across all workers (the first probe comes one interval
    after opening, since the failing call just was one); that caller makes one cheap call
    and `close()`s on success or `open()`s again on failure. The probe schedule lives in
    the hash (`next_probe_at`, compared with Redis TIME inside the script, or with a test
    clock when one is given) rather than in a `SET NX EX` key, so tests can drive it with
    a fake clock; the effect is the same.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        probe_interval: float = 180.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if probe_interval <= 0:
            raise ValueError("probe_interval must be > 0")
        self.redis = client
        self.probe_interval = probe_interval
        self.clock = clock
        self._open = client.register_script(_CIRCUIT_OPEN)
        self._probe = client.register_script(_CIRCUIT_PROBE)

    def open(self, reason: str, detail: str = "") -> None:
        """Stop delivery everywhere (idempotent; a re-open updates reason and detail)."""
        self._open(
            keys=[CIRCUIT_KEY],
            args=[self._clock_arg(), _num(self.probe_interval), reason, detail],
        )

    def close(self) -> None:
        """Resume delivery."""
        self.redis.delete(CIRCUIT_KEY)

    def state(self) -> CircuitState:
        """The breaker as every worker sees it."""
        raw = self.redis.hmget(CIRCUIT_KEY, ["open", "reason", "detail", "since", "next_probe_at"])
        is_open, reason, detail, since, next_probe = (_text(v) for v in raw)
        if is_open != "1":
            return CircuitState(False, "", "", 0.0, 0.0)
        return CircuitState(True, reason, detail, float(since or 0), float(next_probe or 0))

    def is_open(self) -> bool:
        """Shorthand for `state().open`."""
        return self.redis.hget(CIRCUIT_KEY, "open") in (b"1", "1")

    def probe_due(self) -> bool:
        """True for one caller per probe interval while open; False when closed."""
        due = self._probe(keys=[CIRCUIT_KEY], args=[self._clock_arg(), _num(self.probe_interval)])
        return bool(int(due))

    def _clock_arg(self) -> str:
        return "" if self.clock is None else _num(self.clock())
