"""Where the journal poller is: the stored offset, its lease, and lag figures (Redis).

Keys (under `lls:`, one set per journal scope, `global` or `local`):
- `lls:journal:hubspot:{scope}` (hash): `offset` (the last entry whose events are in the
  inbox; absent = not started, `EARLIEST` = read from the earliest entry next), `entries`,
  `events` (totals), `newest_event_ms` (newest occurredAt handed over), `last_poll_at`,
  `last_advance_at`, `tip_at` (last time the poller reached the tip), `gaps`,
  `last_gap_at`, `last_gap_offset`, `last_error`, `last_error_at`.
- `lls:journal:hubspot:{scope}:lock` (string, expiring): the poll lease; the token in it
  fences `advance`, so a poller that lost its lease (stalled, killed and replaced) can
  never move the offset.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis

EARLIEST = "EARLIEST"

# KEYS: lock, hash. ARGV: token, lease_ms, offset, entries, events, newest_ms, now.
_ADVANCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'offset', ARGV[3], 'last_advance_at', ARGV[7])
redis.call('HINCRBY', KEYS[2], 'entries', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'events', ARGV[5])
local newest = tonumber(redis.call('HGET', KEYS[2], 'newest_event_ms') or '0')
if tonumber(ARGV[6]) > newest then redis.call('HSET', KEYS[2], 'newest_event_ms', ARGV[6]) end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def position_key(scope: str) -> str:
    return f"lls:journal:hubspot:{scope}"


@dataclass(frozen=True, slots=True)
class JournalStatus:
    """What `status` and /metrics show about the journal source."""

    scope: str
    offset: str | None
    entries: int
    events: int
    newest_event_ms: int
    last_poll_at: float
    last_advance_at: float
    tip_at: float
    gaps: int
    last_gap_at: float
    last_error: str
    last_error_at: float

    def lag_seconds(self, now: float) -> float | None:
        """Age of the newest change handed over (None before the first one)."""
        return max(0.0, now - self.newest_event_ms / 1000) if self.newest_event_ms else None


class Position:
    """The stored offset of one journal scope, with its fenced lease."""

    def __init__(self, client: redis.Redis, scope: str) -> None:
        self.redis = client
        self.scope = scope
        self.key = position_key(scope)
        self.lock_key = self.key + ":lock"
        self._advance = client.register_script(_ADVANCE)
        self._release = client.register_script(_RELEASE)

    def acquire(self, lease_seconds: float) -> str | None:
        """A lease token, or None while another poller holds the lease."""
        token = secrets.token_hex(8)
        ok = self.redis.set(self.lock_key, token, nx=True, px=int(lease_seconds * 1000))
        return token if ok else None

    def release(self, token: str) -> None:
        self._release(keys=[self.lock_key], args=[token])

    def offset(self) -> str | None:
        raw = self.redis.hget(self.key, "offset")
        return raw.decode() if isinstance(raw, bytes) else raw

    def advance(
        self, token: str, lease_seconds: float, offset: str, entries: int, events: int, newest: int
    ) -> bool:
        """Store `offset` (and counts) if the lease is still ours; False when it is not."""
        args = [token, int(lease_seconds * 1000), offset, entries, events, newest, time.time()]
        return bool(self._advance(keys=[self.lock_key, self.key], args=args))

    def restart_from_earliest(self, token: str, lease_seconds: float, lost_offset: str) -> bool:
        """An expired offset: read from the earliest entry next, and record the gap."""
        if not self.advance(token, lease_seconds, EARLIEST, 0, 0, 0):
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(self.key, "gaps", 1)
        pipe.hset(self.key, mapping={"last_gap_at": time.time(), "last_gap_offset": lost_offset})
        pipe.execute()
        return True

    def note(self, **fields: Any) -> None:
        """Record poll facts (last_poll_at, tip_at, last_error...) best effort."""
        with contextlib.suppress(redis.RedisError):
            self.redis.hset(self.key, mapping={k: str(v) for k, v in fields.items()})

    def status(self) -> JournalStatus | None:
        raw = self.redis.hgetall(self.key)
        if not raw:
            return None
        data = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }

        def num(name: str) -> float:
            try:
                return float(data.get(name) or 0)
            except ValueError:
                return 0.0

        return JournalStatus(
            scope=self.scope,
            offset=data.get("offset"),
            entries=int(num("entries")),
            events=int(num("events")),
            newest_event_ms=int(num("newest_event_ms")),
            last_poll_at=num("last_poll_at"),
            last_advance_at=num("last_advance_at"),
            tip_at=num("tip_at"),
            gaps=int(num("gaps")),
            last_gap_at=num("last_gap_at"),
            last_error=data.get("last_error", ""),
            last_error_at=num("last_error_at"),
        )


def journal_statuses(client: redis.Redis) -> list[JournalStatus]:
    """The status of every journal scope that has been polled (for status and /metrics)."""
    found = []
    for scope in ("global", "local"):
        status = Position(client, scope).status()
        if status is not None:
            found.append(status)
    return found
