"""Hand parsed events to the worker: one Celery message, one Redis pipeline.

Every source uses this one step: the webhook receiver (webhook_app) and the pull sources
(journal poller, CDC subscriber) alike, so an event has one way in.

Order matters for invariant 1 (nothing acknowledged is lost):
1. the events go to the broker as ONE `leadlex_sync.ingest_batch` message;
2. the events' inbox entries (`lls:inbox`, see worker.state), the request's dead letters
   and metric counters go to Redis in ONE MULTI/EXEC pipeline.
If either step fails the request is answered 503 and the CRM resends it: events that did
reach the broker are then enqueued twice, which the worker's fingerprint ledger absorbs;
dead letters are written only once the broker holds the events. When a request has
neither events nor dead letters, a failing metrics write is ignored (best effort).

The inbox is the safety net behind the broker: kombu's Redis transport can lose a message
that a worker popped but had not yet recorded as unacknowledged when it died (or Redis
did), and Celery drops an `acks_late` message whose retry cannot be published. The
worker's periodic sweep enqueues again any acknowledged event not taken in after the
visibility timeout (worker.pipeline.recover_lost).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

import redis
from celery import Celery
from kombu import pools

from worker.batch import Batch
from worker.celery_app import QUEUE_INGEST
from worker.deadletter import STREAM, DeadLetters
from worker.metrics import Metrics
from worker.state import inbox_add

log = logging.getLogger("leadlex_sync.receiver")

INGEST_TASK = "leadlex_sync.ingest_batch"
# Per source label (zsets): newest CRM time handed over (ms), and when the last batch was.
SOURCES_NEWEST = "lls:sources:newest_event_ms"
SOURCES_LAST_BATCH = "lls:sources:last_batch_at"
INVALID_EVENT = "invalid_event"


class EnqueueUnavailable(Exception):
    """The broker or Redis could not take the request's events; answer 503 so it is resent."""


class Enqueuer:
    """Sends a request's events to Celery and records its dead letters and counters.

    Messages go to `broker_url` through a producer pool of our own (kombu's registry,
    keyed by URL, with the Celery app's transport options and timeouts), so each app
    instance publishes where its settings say, whatever the Celery app was used for before.
    """

    def __init__(self, celery_app: Celery, client: redis.Redis, broker_url: str) -> None:
        self.celery = celery_app
        self.redis = client
        self.metrics = Metrics(client)
        self.dead_letters = DeadLetters(client)
        # kombu's process-wide pool for this URL (limit: kombu's global, 10 by default,
        # as Celery sets it from broker_pool_limit); reset after fork by kombu itself.
        self.producers = pools.producers[celery_app.connection_for_write(broker_url)]
        self.acquire_timeout = float(celery_app.conf.broker_pool_acquire_timeout or 5)

    def submit(self, source: str, batch: Batch) -> None:
        """Enqueue `batch`; raises EnqueueUnavailable when the broker or Redis fails."""
        events = [e.to_dict() for e in batch.events]
        if events:
            try:
                with self.producers.acquire(block=True, timeout=self.acquire_timeout) as producer:
                    self.celery.send_task(
                        INGEST_TASK,
                        args=[events],
                        queue=QUEUE_INGEST,
                        producer=producer,
                        # Flower shows this instead of the events (no PII, no saferepr cost).
                        argsrepr=f"[<{len(batch.events)} {source} change events>]",
                        kwargsrepr="{}",
                    )
            except Exception as exc:  # any publish failure means "retry later"
                raise EnqueueUnavailable(f"broker: {type(exc).__name__}") from exc

        pipe = self.redis.pipeline(transaction=True)
        inbox_add(
            pipe,
            [(e["fingerprint"], json.dumps(e, separators=(",", ":"))) for e in events],
            time.time(),
        )
        for rejected in batch.rejected:
            fields = self.dead_letters.fields(
                INVALID_EVENT, source=source, payload=rejected.payload, details=rejected.details()
            )
            pipe.xadd(STREAM, fields)
        self._count(pipe, source, batch)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            if batch.rejected or events:
                raise EnqueueUnavailable(f"redis: {type(exc).__name__}") from exc
            log.warning("receiver metrics not recorded: %s", type(exc).__name__)

    def _count(self, pipe: Any, source: str, batch: Batch) -> None:
        if batch.events:  # per-source lag for `status` and /metrics (hubspot-2026)
            newest = max(e.occurred_at_ms for e in batch.events)
            pipe.zadd(SOURCES_NEWEST, {source: newest}, gt=True)
            pipe.zadd(SOURCES_LAST_BATCH, {source: time.time()}, gt=True)
        incr = self.metrics.incr
        incr("webhooks_received", pipe=pipe, source=source)
        incr("events_enqueued", len(batch.events), pipe=pipe, source=source)
        incr("events_invalid", len(batch.rejected), pipe=pipe, source=source)
        incr("dead_lettered", len(batch.rejected), pipe=pipe, reason=INVALID_EVENT)
        for object_type, count in batch.ignored.items():
            incr("events_ignored", count, pipe=pipe, source=source, kind=object_type)

    def count_refusal(self, source: str, code: str) -> None:
        """Best effort: count a refused request (never raises)."""
        pipe = self.redis.pipeline(transaction=False)
        self.metrics.incr("webhooks_received", pipe=pipe, source=source)
        self.metrics.incr("webhooks_rejected", pipe=pipe, source=source, reason=code)
        with contextlib.suppress(redis.RedisError):  # best effort; the caller logs the refusal
            pipe.execute()
