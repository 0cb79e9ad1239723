"""Hand parsed events to the worker: one Celery message, one Redis pipeline.

Every source uses this one step: the webhook receiver (webhook_app) and the pull sources
(journal poller, CDC subscriber) alike, so an event has one way in.

Order matters for invariant 1 (nothing acknowledged is lost) and for issue 11 (task
arguments carry references, not contact data, so Flower never shows personal data):
1. the events go to the inbox (`lls:inbox`, see worker.state) in ONE MULTI/EXEC;
2. ONE `leadlex_sync.ingest_batch` message goes to the broker, carrying the events'
   fingerprints only: the worker reads each event from the inbox (`load_events`);
3. the request's dead letters and metric counters go to Redis in ONE MULTI/EXEC.
If any step fails the request is answered 503 and the CRM resends it: events already in
the inbox are enqueued again by the worker's sweep or by the resend, which the worker's
fingerprint ledger absorbs; dead letters are written only once the broker holds the
events. When a request has neither events nor dead letters, a failing metrics write is
ignored (best effort), and skipped while Redis is known to be unhealthy (`RedisHealth`).

The inbox is the safety net behind the broker: kombu's Redis transport can lose a message
that a worker popped but had not yet recorded as unacknowledged when it died (or Redis
did), and Celery drops an `acks_late` message whose retry cannot be published. The
worker's periodic sweep enqueues again any acknowledged event not taken in after the
visibility timeout (worker.pipeline.recover_lost).

Every other dispatch of the ingest task (parked-event replay, dlq replay, the inbox
sweep) uses the same reference shape through `record_events` + `ingest_message_args`.
The worker still accepts the old shape (a list of event dicts) for messages queued
before an upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
import time
from typing import Any

import redis
from celery import Celery
from hiredis import pack_command
from kombu import pools

from worker.batch import Batch
from worker.broker_wire import EnvelopeTemplate, task_envelope
from worker.celery_app import QUEUE_INGEST
from worker.deadletter import DeadLetters, warn_trimmed
from worker.metrics import COUNTERS_KEY, Metrics
from worker.redis_pipe import RedisPipe, ReplyError
from worker.state import INBOX, INBOX_AT, inbox_add

log = logging.getLogger("leadlex_sync.receiver")

INGEST_TASK = "leadlex_sync.ingest_batch"
# Per source label (zsets): newest CRM time handed over (ms), and when the last batch was.
SOURCES_NEWEST = "lls:sources:newest_event_ms"
SOURCES_LAST_BATCH = "lls:sources:last_batch_at"
INVALID_EVENT = "invalid_event"
# After a Redis timeout or connection error, best-effort writes are skipped this long.
UNHEALTHY_SECONDS = 5.0


# The direct-publish round trip as one EVAL (issue 14): the same writes as the MULTI of
# `_submit_in_one_multi` (inbox records, the broker message, per-source lag, counters),
# atomic as well, but one command to pack and one reply to parse instead of nine. EVAL,
# not EVALSHA: Redis caches the compiled script by its body, and a restarted Redis (empty
# script cache) needs no NOSCRIPT retry.
# KEYS: inbox, inbox_at, broker queue, sources_newest, sources_last_batch, counters.
# ARGV: now, n, (fingerprint, event JSON) x n, envelope, source, newest_ms,
#       (counter field, amount)...
SUBMIT_SCRIPT = """
local now = ARGV[1]
local n = tonumber(ARGV[2])
local records, stamps = {}, {}
for i = 0, n - 1 do
  local ref = ARGV[3 + 2 * i]
  records[#records + 1] = ref
  records[#records + 1] = ARGV[4 + 2 * i]
  stamps[#stamps + 1] = now
  stamps[#stamps + 1] = ref
end
redis.call('HSET', KEYS[1], unpack(records))
redis.call('ZADD', KEYS[2], 'NX', unpack(stamps))
local at = 3 + 2 * n
redis.call('LPUSH', KEYS[3], ARGV[at])
redis.call('ZADD', KEYS[4], 'GT', ARGV[at + 2], ARGV[at + 1])
redis.call('ZADD', KEYS[5], 'GT', now, ARGV[at + 1])
for i = at + 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1])
end
return n
"""


class EnqueueUnavailable(Exception):
    """The broker or Redis could not take the request's events; answer 503 so it is resent."""


class RedisHealth:
    """Remembers that Redis just failed to answer (a timeout or a refused connection).

    While unhealthy, best-effort writes are skipped and requests that must write are
    refused at once except one probe a second, so a hung Redis cannot queue requests
    behind each other's timeouts; the first success makes it healthy again."""

    def __init__(self, hold_seconds: float = UNHEALTHY_SECONDS, probe_seconds: float = 1.0) -> None:
        self.hold_seconds = hold_seconds
        self.probe_seconds = probe_seconds
        self._until = 0.0
        self._next_probe = 0.0

    def failed(self) -> None:
        now = time.monotonic()
        self._until = now + self.hold_seconds
        self._next_probe = now + self.probe_seconds

    def ok(self) -> None:
        self._until = 0.0

    @property
    def unhealthy(self) -> bool:
        return time.monotonic() < self._until

    def may_try(self) -> bool:
        """True when healthy, or when it is time for the next probe (claimed by the caller)."""
        now = time.monotonic()
        if now >= self._until:
            return True
        if now >= self._next_probe:
            self._next_probe = now + self.probe_seconds
            return True
        return False


@functools.lru_cache(maxsize=64)
def _field(name: str, source: str) -> str:
    """Counter field of `name` for one source label (cached: a handful of sources)."""
    return Metrics.field(name, source=source)


def record_events(
    pipe: Any, events: list[dict[str, Any]], now: float, *, refresh: bool = False
) -> list[str]:
    """Queue the events' inbox records on `pipe`; returns their fingerprints (the refs).

    `refresh=True` (re-dispatches: parked-event replay, dlq replay, the sweep) also moves
    each record's time to `now`: a record left from the first delivery keeps its old time
    otherwise, and the sweep could forget it (it is still parked) before the worker reads
    the ref."""
    inbox_add(pipe, [(e["fingerprint"], json.dumps(e, separators=(",", ":"))) for e in events], now)
    refs = [str(e["fingerprint"]) for e in events]
    if refresh and refs:
        pipe.zadd(INBOX_AT, dict.fromkeys(refs, now))
    return refs


def ingest_message_args(refs: list[str], label: str) -> dict[str, Any]:
    """send_task/apply_async keyword arguments of one ingest message carrying `refs`."""
    return {
        "args": [refs],
        "queue": QUEUE_INGEST,
        # Flower shows this: a count, never field values (the args are fingerprints anyway).
        "argsrepr": f"[<{len(refs)} {label} event refs>]",
        "kwargsrepr": "{}",
    }


def load_events(client: redis.Redis, items: list[Any]) -> list[dict[str, Any] | None]:
    """The events an ingest message names: refs read from the inbox, old-shape dicts as is.

    A ref whose inbox record is gone was already taken in (the sweep forgets an event
    once it is seen, parked or dead-lettered): None, which the worker counts as duplicate."""
    refs = [item for item in items if isinstance(item, str)]
    raw = dict(zip(refs, client.hmget(INBOX, refs), strict=True)) if refs else {}
    out: list[dict[str, Any] | None] = []
    for item in items:
        if isinstance(item, dict):
            out.append(item)
        elif isinstance(item, str) and raw.get(item) is not None:
            value = raw[item]
            out.append(json.loads(value.decode() if isinstance(value, bytes) else value))
        else:
            out.append(None)
    return out


def submit_command(
    celery_app: Celery,
    source: str,
    batches: list[Batch],
    events: list[dict[str, Any]],
    now: float,
    template: EnvelopeTemplate | None = None,
) -> tuple[Any, ...]:
    """The one `EVAL SUBMIT_SCRIPT` of one or more requests' batches from `source`, each
    with events and no dead letters, as a Redis command (script, keys, args): a pure
    function, so the thread path (`Enqueuer`, one batch) and the event-loop path
    (`AsyncSubmitter`, the requests of one loop iteration) send the very same writes: every
    event in the inbox, ONE ingest message naming them all, every request's counters.
    `events` are the batches' events as dicts, in order; `template`: the ingest task's
    EnvelopeTemplate built in this thread (the same envelope, cheaper), else task_envelope."""
    refs = [str(e["fingerprint"]) for e in events]
    args = ingest_message_args(refs, source)
    if template is not None:
        key, envelope = template.build(args["args"], args["argsrepr"])
    else:
        key, envelope = task_envelope(
            celery_app,
            INGEST_TASK,
            args["args"],
            queue=args["queue"],
            argsrepr=args["argsrepr"],
            kwargsrepr=args["kwargsrepr"],
        )
    argv: list[Any] = [now, len(events)]
    for ref, event in zip(refs, events, strict=True):
        argv += (ref, json.dumps(event, separators=(",", ":")))
    newest = max(e.occurred_at_ms for batch in batches for e in batch.events)
    argv += (envelope, source, newest)
    totals: dict[str, int] = {}
    for batch in batches:
        for name, amount in Enqueuer._increments(source, batch):
            totals[name] = totals.get(name, 0) + amount
    for name, amount in totals.items():
        argv += (name, amount)
    return ("EVAL", SUBMIT_SCRIPT, 6, INBOX, INBOX_AT, key, SOURCES_NEWEST,
            SOURCES_LAST_BATCH, COUNTERS_KEY, *argv)  # fmt: skip


class Enqueuer:
    """Records a request's events, sends one reference message, records its dead letters.

    Messages go to `broker_url` through a producer pool of our own (kombu's registry,
    keyed by URL and transport options, with the Celery app's options and, when
    `timeout` is given, that socket timeout and no retries), so each app instance
    publishes where its settings say, whatever the Celery app was used for before.
    """

    def __init__(
        self,
        celery_app: Celery,
        client: redis.Redis,
        broker_url: str,
        *,
        dead_letters: DeadLetters | None = None,
        timeout: float | None = None,
        direct_publish: bool = False,
        wait_replicas: int = 0,
    ) -> None:
        self.celery = celery_app
        self.redis = client
        self.metrics = Metrics(client)
        self.dead_letters = dead_letters or DeadLetters(client)
        self.health = RedisHealth()
        self._local = threading.local()  # each thread's own client: `_thread_client`
        # `direct_publish`: `client` is the broker's Redis (REDIS_URL serves both), so the
        # message is LPUSHed in the inbox's MULTI (worker.broker_wire): one round trip.
        self.direct_publish = direct_publish
        # REDIS_WAIT_REPLICAS: with a replicated Redis (Sentinel), acknowledge only what
        # that many replicas hold, so a failover cannot lose an acknowledged event.
        self.wait_replicas = wait_replicas
        # WAIT's own bound stays well inside the client's socket timeout, so its answer
        # (a count, possibly short) is read rather than timed out.
        self.wait_ms = max(1, int((timeout if timeout is not None else 2.0) * 1000 * 0.6))
        options: dict[str, Any] = {}
        if timeout is not None:
            options = {
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "max_retries": 0,
            }
        # kombu's process-wide pool for this connection (limit: kombu's global, 10 by
        # default, as Celery sets it from broker_pool_limit); reset after fork by kombu.
        self.producers = pools.producers[
            celery_app.connection_for_write(broker_url, transport_options=options)
        ]
        self.acquire_timeout = float(
            timeout if timeout is not None else celery_app.conf.broker_pool_acquire_timeout or 5
        )

    def submit(self, source: str, batch: Batch) -> None:
        """Enqueue `batch`; raises EnqueueUnavailable when the broker or Redis fails."""
        events = [e.to_dict() for e in batch.events]
        if (events or batch.rejected) and not self.health.may_try():
            raise EnqueueUnavailable("redis: unhealthy (a call timed out or failed just now)")
        if events and self.direct_publish:
            if batch.rejected:  # dead letters use their own script: the MULTI holds both
                self._submit_in_one_multi(source, batch, events)
            else:
                self._submit_in_one_script(source, batch, events)
            return
        if events:
            pipe = self.redis.pipeline(transaction=True)
            refs = record_events(pipe, events, time.time())
            self._execute(pipe, "inbox")
            try:
                with self.producers.acquire(block=True, timeout=self.acquire_timeout) as producer:
                    self.celery.send_task(
                        INGEST_TASK,
                        producer=producer,
                        retry=False,
                        **ingest_message_args(refs, source),
                    )
            except Exception as exc:  # any publish failure means "retry later"
                self.health.failed()
                raise EnqueueUnavailable(f"broker: {type(exc).__name__}") from exc

        if not (batch.rejected or events) and self.health.unhealthy:
            log.warning("receiver metrics not recorded: Redis is unhealthy")
            return
        pipe = self.redis.pipeline(transaction=True)
        for rejected in batch.rejected:
            fields = self.dead_letters.fields(
                INVALID_EVENT, source=source, payload=rejected.payload, details=rejected.details()
            )
            self.dead_letters.add_on(pipe, fields)
        self._count(pipe, source, batch)
        try:
            results = self._execute(pipe, "dead letters")
        except EnqueueUnavailable:
            if batch.rejected or events:
                raise
            log.warning("receiver metrics not recorded: Redis did not answer")
            return
        warn_trimmed(sum(int(r) for r in results[: len(batch.rejected)]))

    def _submit_in_one_multi(self, source: str, batch: Batch, events: list[dict[str, Any]]) -> None:
        """Dead letters, inbox records, the broker message and the counters: one MULTI,
        one round trip. All or nothing, so invariant 1 holds as before (a failure answers
        503 and nothing was recorded). With REDIS_WAIT_REPLICAS > 0 the same round trip
        ends with `WAIT n timeout` on the same connection (explicit MULTI/EXEC on a plain
        pipeline: WAIT inside a transaction would not wait): fewer replicas than asked
        within the timeout answers 503."""
        waiting = self.wait_replicas > 0
        pipe = self.redis.pipeline(transaction=not waiting)
        if waiting:
            pipe.execute_command("MULTI")
        for rejected in batch.rejected:
            fields = self.dead_letters.fields(
                INVALID_EVENT, source=source, payload=rejected.payload, details=rejected.details()
            )
            self.dead_letters.add_on(pipe, fields)
        refs = record_events(pipe, events, time.time())
        args = ingest_message_args(refs, source)
        key, envelope = task_envelope(
            self.celery,
            INGEST_TASK,
            args["args"],
            queue=args["queue"],
            argsrepr=args["argsrepr"],
            kwargsrepr=args["kwargsrepr"],
        )
        pipe.lpush(key, envelope)
        self._count(pipe, source, batch)
        if not waiting:
            results = self._execute(pipe, "inbox + broker")
        else:
            pipe.execute_command("EXEC")
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms)
            out = self._execute(pipe, "inbox + broker + wait")
            results, replicas = out[-2], out[-1]
            if not isinstance(results, list) or not isinstance(replicas, int):
                raise EnqueueUnavailable("redis: transaction not executed")
            if replicas < self.wait_replicas:
                raise EnqueueUnavailable(
                    f"redis: {replicas} of {self.wait_replicas} replicas acknowledged"
                )
        warn_trimmed(sum(int(r) for r in results[: len(batch.rejected)]))

    def _submit_in_one_script(
        self, source: str, batch: Batch, events: list[dict[str, Any]]
    ) -> None:
        """Inbox records, the broker message and the counters in one EVAL (SUBMIT_SCRIPT):
        all or nothing as in `_submit_in_one_multi`, for a batch without dead letters.
        With REDIS_WAIT_REPLICAS > 0 the same round trip ends with `WAIT n timeout`."""
        command = submit_command(self.celery, source, [batch], events, time.time())
        if self.wait_replicas <= 0:
            try:
                self._thread_client().execute_command(*command)
            except redis.RedisError as exc:
                self._drop_thread_client()
                self.health.failed()
                raise EnqueueUnavailable(f"redis (inbox + broker): {type(exc).__name__}") from exc
            self.health.ok()
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command(*command)
        pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms)
        replicas = self._execute(pipe, "inbox + broker + wait")[-1]
        if not isinstance(replicas, int):
            raise EnqueueUnavailable("redis: WAIT not answered")
        if replicas < self.wait_replicas:
            raise EnqueueUnavailable(
                f"redis: {replicas} of {self.wait_replicas} replicas acknowledged"
            )

    def _thread_client(self) -> redis.Redis:
        """This thread's client on the receiver's connection pool, holding one connection
        (`single_connection_client`): a pool checkout per request peeks at the socket (one
        more system call, and a GIL hand-over among the server's threads). Same timeouts,
        retry and health checks (they belong to the pool's connections)."""
        client: redis.Redis | None = getattr(self._local, "client", None)
        if client is None:
            client = redis.Redis(
                connection_pool=self.redis.connection_pool, single_connection_client=True
            )
            self._local.client = client
        return client

    def _drop_thread_client(self) -> None:
        """After a failure: the next request checks a connection out of the pool afresh
        (which reconnects, and asks Sentinel for the current master)."""
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with contextlib.suppress(redis.RedisError):  # a broken connection: nothing to keep
                client.close()

    def _execute(self, pipe: Any, what: str) -> list[Any]:
        try:
            results: list[Any] = pipe.execute()
        except redis.RedisError as exc:
            self.health.failed()
            raise EnqueueUnavailable(f"redis ({what}): {type(exc).__name__}") from exc
        self.health.ok()
        return results

    def _count(self, pipe: Any, source: str, batch: Batch) -> None:
        if batch.events:  # per-source lag for `status` and /metrics (hubspot-2026)
            newest = max(e.occurred_at_ms for e in batch.events)
            pipe.zadd(SOURCES_NEWEST, {source: newest}, gt=True)
            pipe.zadd(SOURCES_LAST_BATCH, {source: time.time()}, gt=True)
        for name, amount in self._increments(source, batch):
            pipe.hincrby(COUNTERS_KEY, name, amount)

    @staticmethod
    def _increments(source: str, batch: Batch) -> list[tuple[str, int]]:
        """The request's counter increments: (hash field in COUNTERS_KEY, amount > 0)."""
        out = [(_field("webhooks_received", source), 1)]
        if batch.events:
            out.append((_field("events_enqueued", source), len(batch.events)))
        if batch.rejected:
            out.append((_field("events_invalid", source), len(batch.rejected)))
            out.append((Metrics.field("dead_lettered", reason=INVALID_EVENT), len(batch.rejected)))
        out += [
            (Metrics.field("events_ignored", source=source, kind=object_type), count)
            for object_type, count in batch.ignored.items()
            if count
        ]
        return out

    def count_refusal(self, source: str, code: str) -> None:
        """Best effort: count a refused request (never raises; skipped while Redis is unhealthy)."""
        if self.health.unhealthy:
            return
        pipe = self.redis.pipeline(transaction=False)
        self.metrics.incr("webhooks_received", pipe=pipe, source=source)
        self.metrics.incr("webhooks_rejected", pipe=pipe, source=source, reason=code)
        try:
            pipe.execute()
        except redis.RedisError:  # best effort; the caller logs the refusal
            self.health.failed()


def _loop_connection_kwargs(client: redis.Redis) -> dict[str, Any] | None:
    """RedisPipe's settings for `client`'s connection, or None when it is not one the
    pipe opens the same way (TLS, Sentinel-managed, a credential provider, a custom
    class): the receiver then hands off on its threads."""
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if kwargs.get("credential_provider") is not None:
        return None
    carried = {
        "db": int(kwargs.get("db") or 0),
        "username": kwargs.get("username"),
        "password": kwargs.get("password"),
    }
    if pool.connection_class is redis.connection.UnixDomainSocketConnection:
        return {"path": kwargs["path"], **carried}
    if pool.connection_class is redis.connection.Connection:
        host = kwargs.get("host") or "localhost"
        return {"host": host, "port": int(kwargs.get("port") or 6379), **carried}
    return None


# At most this many events in one grouped EVAL of the loop path (AsyncSubmitter).
GROUP_EVENTS = 100
# The loop's connections, as `CLIENT LIST` shows them.
LOOP_CLIENT_NAME = "leadlex-sync-receiver-loop"


class AsyncSubmitter:
    """The common hand-off awaited on an event loop (issue 14): a batch with events and no
    dead letters, with direct publish and no REDIS_WAIT_REPLICAS, goes to Redis as the
    Enqueuer's own EVAL (`submit_command`) on one pipelined connection of the loop's own
    (worker.redis_pipe: hiredis packs and parses, no per-call machinery) instead of a
    blocking socket, each request's wait bounded by RECEIVER_REDIS_TIMEOUT_SECONDS
    (connecting included), sharing the Enqueuer's RedisHealth. Every other batch is not
    `fits` and goes to the Enqueuer on a thread.

    Group commit: the requests that reach their hand-off in the same loop iteration (those
    whose bytes arrived in one wake-up) share ONE EVAL per source, flushed by a `call_soon`
    callback (no added wait): every event in the inbox, one ingest message naming them all,
    each request's counters summed. Each request is still answered only once that EVAL has
    replied, and all of them get its outcome (a failure answers each 503). A request whose
    wait timed out before the flush is left out of it. At most `group_events` events go in
    one EVAL (a larger request goes alone). One round trip then serves several requests,
    and the worker ingests several events per message (`ingest_batch`).

    Failures: a connection lost with the EVAL unanswered is tried once more at once on a
    new connection (as redis-py retries a broken connection; the EVAL's writes are
    idempotent but for the broker message, whose duplicate the worker's fingerprint
    ledger absorbs); a refused connection, an error reply or a timeout answers 503 and
    marks Redis unhealthy. A request that times out also closes a connection whose oldest
    command has waited half the timeout (a Redis that stopped answering).

    Build it in the process and on the loop that uses it (its connection belongs to that
    loop); `available(enqueuer)` says whether the Enqueuer's Redis can be reached this way
    (a plain redis:// or unix:// connection, no credential provider)."""

    def __init__(
        self, enqueuer: Enqueuer, timeout: float, group_events: int = GROUP_EVENTS
    ) -> None:
        settings = _loop_connection_kwargs(enqueuer.redis)
        if settings is None:
            raise ValueError("the receiver's Redis connection cannot be opened on the loop")
        self.enqueuer = enqueuer
        self.timeout = timeout
        self.pipe = RedisPipe(name=LOOP_CLIENT_NAME, connect_timeout=timeout, **settings)
        # The ingest message's envelope, precomputed on first use (on the loop's thread:
        # it carries that thread's Celery reply_to); None if its shape was unexpected.
        self._template: EnvelopeTemplate | None = None
        self._template_tried = False
        self.group_events = max(1, group_events)
        # Requests waiting for this iteration's flush: (source, batch, future).
        self._pending: list[tuple[str, Batch, asyncio.Future[None]]] = []
        self._connecting: set[asyncio.Task[None]] = set()

    @staticmethod
    def available(enqueuer: Enqueuer) -> bool:
        return _loop_connection_kwargs(enqueuer.redis) is not None

    def fits(self, batch: Batch) -> bool:
        """True when `submit` takes this batch (else: `Enqueuer.submit` on a thread)."""
        enqueuer = self.enqueuer
        return (
            bool(batch.events)
            and not batch.rejected
            and enqueuer.direct_publish
            and enqueuer.wait_replicas <= 0
        )

    async def submit(self, source: str, batch: Batch) -> None:
        """As `Enqueuer.submit` for a batch that `fits`; raises EnqueueUnavailable."""
        if not self.enqueuer.health.may_try():
            raise EnqueueUnavailable("redis: unhealthy (a call timed out or failed just now)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((source, batch, future))
        try:
            async with asyncio.timeout(self.timeout):
                await future
        except TimeoutError as exc:
            self.enqueuer.health.failed()
            self.pipe.stale(self.timeout / 2)
            raise EnqueueUnavailable("redis (inbox + broker): TimeoutError") from exc

    def _flush(self) -> None:
        """This iteration's requests, grouped by source, `group_events` events at most per
        group (in arrival order), each group sent as one EVAL."""
        pending, self._pending = self._pending, []
        groups: dict[str, list[list[tuple[Batch, asyncio.Future[None]]]]] = {}
        sizes: dict[str, int] = {}
        for source, batch, future in pending:
            if future.done():  # its wait timed out already: not written, answered 503
                continue
            chunks = groups.setdefault(source, [])
            size = len(batch.events)
            if not chunks or sizes[source] + size > self.group_events:
                chunks.append([])
                sizes[source] = 0
            chunks[-1].append((batch, future))
            sizes[source] += size
        for source, chunks in groups.items():
            for chunk in chunks:
                self._send(source, chunk)

    def _send(self, source: str, group: list[tuple[Batch, asyncio.Future[None]]]) -> None:
        """One EVAL for `group`, on the open connection (or once connected)."""
        batches = [batch for batch, _ in group]
        try:
            events = [e.to_dict() for batch in batches for e in batch.events]
            command = submit_command(
                self.enqueuer.celery, source, batches, events, time.time(), self._envelopes()
            )
            packed = pack_command(command)
        except Exception as exc:  # every waiter must be answered
            log.exception("receiver: the loop hand-off failed")
            _answer(group, f"hand-off: {type(exc).__name__}")
            return
        if self.pipe.connected:
            self.pipe.send(packed, functools.partial(self._settle, group, packed, False))
        else:
            self._connect_then_send(group, packed)

    def _connect_then_send(
        self, group: list[tuple[Batch, asyncio.Future[None]]], packed: bytes
    ) -> None:
        """Connect, then send; a failure on a fresh connection is not retried."""

        async def connect_then_send() -> None:
            try:
                await self.pipe.connect()
                self.pipe.send(packed, functools.partial(self._settle, group, packed, True))
            except (OSError, TimeoutError) as exc:  # ConnectionError is an OSError
                self._settle(group, packed, True, exc)

        task = asyncio.ensure_future(connect_then_send())
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def _settle(
        self,
        group: list[tuple[Batch, asyncio.Future[None]]],
        packed: bytes,
        retried: bool,
        reply: Any,
    ) -> None:
        """The EVAL's reply (or failure) for every waiting request of `group`."""
        health = self.enqueuer.health
        if (
            isinstance(reply, ConnectionError)
            and not retried
            and any(not future.done() for _, future in group)
        ):
            self._connect_then_send(group, packed)
            return
        if isinstance(reply, BaseException):
            health.failed()
            name = "ResponseError" if isinstance(reply, ReplyError) else type(reply).__name__
            _answer(group, f"redis (inbox + broker): {name}")
            return
        health.ok()
        _answer(group, None)

    def _envelopes(self) -> EnvelopeTemplate | None:
        if not self._template_tried:
            self._template_tried = True
            probe = ingest_message_args([], "x")
            try:
                self._template = EnvelopeTemplate(
                    self.enqueuer.celery,
                    INGEST_TASK,
                    queue=probe["queue"],
                    kwargsrepr=probe["kwargsrepr"],
                )
            except ValueError:
                self._template = None  # task_envelope, as the threads
        return self._template

    async def close(self) -> None:
        """Close the loop's connection (waiting requests get a 503)."""
        self.pipe.close()


def _answer(group: list[tuple[Batch, asyncio.Future[None]]], failure: str | None) -> None:
    """Each still-waiting request of `group`: done, or EnqueueUnavailable(failure)."""
    for _, future in group:
        if future.done():
            continue
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(EnqueueUnavailable(failure))
