"""Who is working, read broker-side: which queues have a consumer, the limits the workers
run with, and when the pump last ran. For `/readyz` and `leadlex-sync status`, so a queue
that fills with nobody consuming it (a worker started with a `-Q` that misses it, or no
worker at all) is reported instead of failing silently.

Keys (all under `lls:`):
- `lls:consumers:{queue}` (zset): worker hostname -> expiry (epoch s). A worker writes it
  when it is ready and again with every Celery heartbeat (2 s), and removes it on shutdown;
  an entry not refreshed within `CONSUMER_TTL_SECONDS` counts as gone.
- `lls:workers:limits` (hash): the per-minute/daily limits the last started worker runs with
  and where they came from (`per_minute`, `daily_limit`, `origin`, `at`).
- `lls:pump:last_run` (string): epoch seconds of the pump's last run (beat is alive).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from worker.settings import Settings

CONSUMERS_KEY = "lls:consumers:{queue}"
LIMITS_KEY = "lls:workers:limits"
PUMP_KEY = "lls:pump:last_run"
CONSUMER_TTL_SECONDS = 15.0


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def announce(
    client: redis.Redis,
    hostname: str,
    queues: list[str],
    *,
    now: float | None = None,
    ttl: float = CONSUMER_TTL_SECONDS,
) -> None:
    """Record that `hostname` consumes `queues` for the next `ttl` seconds."""
    expires = (now if now is not None else time.time()) + ttl
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        key = CONSUMERS_KEY.format(queue=queue)
        pipe.zadd(key, {hostname: expires})
        pipe.expire(key, int(ttl * 4))
    pipe.execute()


def withdraw(client: redis.Redis, hostname: str, queues: list[str]) -> None:
    """`hostname` stopped consuming `queues` (warm shutdown)."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.zrem(CONSUMERS_KEY.format(queue=queue), hostname)
    pipe.execute()


@dataclass(frozen=True)
class QueueState:
    """One broker queue: messages waiting in it and live workers consuming it."""

    name: str
    messages: int
    consumers: int

    @property
    def stranded(self) -> bool:
        """Messages wait and no worker consumes this queue: they will never be delivered."""
        return self.messages > 0 and self.consumers == 0


def queue_states(
    client: redis.Redis, queues: tuple[str, ...] | list[str], *, now: float | None = None
) -> list[QueueState]:
    """Messages and live consumers of each queue (one round trip)."""
    at = now if now is not None else time.time()
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
        pipe.zcount(CONSUMERS_KEY.format(queue=queue), f"({at}", "+inf")
    replies = pipe.execute()
    return [
        QueueState(queue, int(replies[2 * i]), int(replies[2 * i + 1]))
        for i, queue in enumerate(queues)
    ]


def stranded_detail(states: list[QueueState]) -> str:
    """One sentence naming the stranded queues and the fix ('' when none)."""
    stuck = [s for s in states if s.stranded]
    if not stuck:
        return ""
    names = ", ".join(f"{s.name} ({s.messages} waiting)" for s in stuck)
    return (
        f"no worker consumes {names}: start `celery -A worker worker` without -Q "
        f"(it consumes every queue) or add {','.join(s.name for s in stuck)} to its -Q"
    )


def record_limits(
    client: redis.Redis, per_minute: int, daily_limit: int, origin: str, *, now: float | None = None
) -> None:
    """The limits a starting worker runs with, and which setting they came from."""
    client.hset(
        LIMITS_KEY,
        mapping={
            "per_minute": per_minute,
            "daily_limit": daily_limit,
            "origin": origin,
            "at": now if now is not None else time.time(),
        },
    )


def worker_limits(client: redis.Redis) -> dict[str, str]:
    """What `record_limits` stored ({} when no worker has started on this Redis)."""
    return {_text(k): _text(v) for k, v in client.hgetall(LIMITS_KEY).items()}


def pump_ran(client: redis.Redis, *, now: float | None = None) -> None:
    """The periodic pump ran (so beat is alive)."""
    client.set(PUMP_KEY, now if now is not None else time.time(), ex=86_400)


def pump_last_run(client: redis.Redis) -> float | None:
    """When the pump last ran, or None if it never did (within a day)."""
    value = client.get(PUMP_KEY)
    return float(_text(value)) if value is not None else None


def limits_origin(settings: Settings) -> str:
    """Which setting the effective per-minute and daily limits come from."""
    explicit = [
        name
        for name, value in (
            ("LEADLEX_RATE_PER_MINUTE", settings.leadlex_rate_per_minute),
            ("LEADLEX_DAILY_LIMIT", settings.leadlex_daily_limit),
        )
        if value
    ]
    plan = f"LEADLEX_PLAN={settings.leadlex_plan}" if settings.leadlex_plan else ""
    if explicit:
        return " + ".join(explicit) + (f" (over {plan})" if plan else "")
    return plan or "default plan (starter)"
