"""Backfill (I/O): a queue in Redis that feeds planned CRM values into the normal ingest path,
after live changes and within a share of the daily budget.

Keys (all `lls:backfill:*`):
- `queue` (list): planned ChangeEvents (JSON), oldest plan first;
- `planned` (set): their fingerprints, so planning again after a kill or a re-run queues
  nothing twice;
- `state` (hash): `total` (queued ever), `released`, `share`, `day` (UTC day number of the
  Redis clock), `day_released` (records reserved today), `seconds_per_record`.

`release(rt)` runs on every pump tick (beat, every second). It releases nothing while any
contact has staged changes waiting (live changes flow first; a released record waits for
its own flush before the next batch), while the workers are paused or the circuit is open,
or once today's allowance (`floor(share * LEADLEX daily limit)`) is used. Otherwise it
reserves up to `per_tick` records of today's allowance (HINCRBY, before anything is
released: a crash after the reservation can only leave the day *under* its share), hands
them to ingest (inbox + message, as every source does), and only then trims them from the
queue: a crash in between releases them again and the fingerprint ledger makes the second
copy a no-op. Each record costs at most one PATCH; a flush that coalesces it with a live
change costs nothing extra. Events carry the export's time (`as_of`), so a live change made
after the export is never overwritten (per-field CRM time, "never older than applied").
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from worker.events import ChangeEvent, fingerprint
from worker.onboarding.backfill_plan import BackfillItem, finish_at, per_day
from worker.pipeline.runtime import Runtime

QUEUE = "lls:backfill:queue"
PLANNED = "lls:backfill:planned"
STATE = "lls:backfill:state"
LOCK = "lls:backfill:lock"
DAY_SECONDS = 86_400


def backfill_event(source: str, account: str, item: BackfillItem, as_of_ms: int) -> ChangeEvent:
    """The ChangeEvent a planned record becomes (a stable fingerprint per record and export)."""
    return ChangeEvent(
        source=source,  # type: ignore[arg-type]
        account=account,
        object_type="contact",
        object_id=item.object_id,
        kind="update",
        occurred_at_ms=as_of_ms,
        fingerprint=fingerprint(
            "backfill", source, account, item.object_id, as_of_ms, sorted(item.changes.items())
        ),
        event_id="backfill",
        changes=dict(item.changes),
        received_at_ms=as_of_ms,
    )


def enqueue(
    client: redis.Redis,
    events: Iterable[ChangeEvent],
    *,
    share: float,
    seconds_per_record: float,
) -> int:
    """Queue the events not queued before; returns how many were added."""
    added = 0
    batch: list[ChangeEvent] = []

    def push() -> None:
        nonlocal added
        pipe = client.pipeline(transaction=True)
        for e in batch:
            pipe.sadd(PLANNED, e.fingerprint)
        fresh = [e for e, new in zip(batch, pipe.execute(), strict=True) if new]
        if fresh:
            pipe = client.pipeline(transaction=True)
            pipe.rpush(QUEUE, *[json.dumps(e.to_dict()) for e in fresh])
            pipe.hincrby(STATE, "total", len(fresh))
            pipe.execute()
        added += len(fresh)
        batch.clear()

    for event in events:
        batch.append(event)
        if len(batch) == 500:
            push()
    if batch:
        push()
    client.hset(STATE, mapping={"share": share, "seconds_per_record": seconds_per_record})
    return added


def _day(now: float) -> int:
    return math.floor(now / DAY_SECONDS)


def _int(raw: Any) -> int:
    return int(raw or 0)


def release(
    rt: Runtime,
    per_tick: int | None = None,
    on_dispatched: Callable[[int], None] | None = None,
) -> int:
    """Periodic: release the next records if live work and the share allow; returns how many.

    `on_dispatched` is a test seam called after the hand-off, before the queue is trimmed."""
    client = rt.redis
    if not client.llen(QUEUE):
        return 0
    if rt.state.due_count() > 0 or rt.circuit.state().open:
        return 0
    now = rt.clock()
    until, _ = rt.budget.paused_until()
    if until > now:
        return 0
    if not client.set(LOCK, "1", nx=True, px=30_000):
        return 0
    try:
        share_raw, day_raw, day_released_raw = client.hmget(STATE, ["share", "day", "day_released"])
        share = float(share_raw or rt.settings.backfill_budget_share)
        today = _day(now)
        released_today = _int(day_released_raw) if _int(day_raw) == today else 0
        allowance = per_day(share, rt.settings.daily_limit) - released_today
        n = min(allowance, per_tick or max(1, rt.settings.rate_per_minute // 2))
        if n <= 0:
            return 0
        raw = client.lrange(QUEUE, 0, n - 1)
        if not raw:
            return 0
        client.hset(
            STATE, mapping={"day": today, "day_released": released_today + len(raw)}
        )  # reserve first: a crash from here on leaves the day under its share
        rt.dispatch_ingest([json.loads(r) for r in raw])
        if on_dispatched is not None:
            on_dispatched(len(raw))
        pipe = client.pipeline(transaction=True)
        pipe.ltrim(QUEUE, len(raw), -1)
        pipe.hincrby(STATE, "released", len(raw))
        pipe.execute()
        rt.metrics.incr("backfill_released", len(raw))
        return len(raw)
    finally:
        client.delete(LOCK)


@dataclass(frozen=True)
class BackfillStatus:
    total: int
    released: int
    remaining: int
    per_day: int
    released_today: int
    finish_at: float  # expected release of the last record (epoch seconds, Redis clock)


def status(rt: Runtime) -> BackfillStatus:
    """Progress and the expected end, on the Redis clock."""
    client = rt.redis
    total_raw, released_raw, share_raw, day_raw, day_released_raw, pace_raw = client.hmget(
        STATE, ["total", "released", "share", "day", "day_released", "seconds_per_record"]
    )
    now = rt.clock()
    share = float(share_raw or rt.settings.backfill_budget_share)
    daily = per_day(share, rt.settings.daily_limit)
    released_today = _int(day_released_raw) if _int(day_raw) == _day(now) else 0
    remaining = int(client.llen(QUEUE))
    pace = float(pace_raw or 0) or 60.0 / max(1, rt.settings.rate_per_minute)
    return BackfillStatus(
        total=_int(total_raw),
        released=_int(released_raw),
        remaining=remaining,
        per_day=daily,
        released_today=released_today,
        finish_at=finish_at(remaining, daily, released_today, now, pace),
    )
