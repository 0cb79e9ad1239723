"""Celery tasks: thin wrappers that rebuild values from JSON and call worker.pipeline.

Task names are explicit and stable (`leadlex_sync.*`) so renaming code never strands
queued messages. Arguments are ids and plain dicts only: a contact id (a LeadLex
UUID) identifies the work in Flower without showing personal data; ingest batches
show a count and the records they touch, not the field values.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import redis
from celery import Task
from celery.signals import setup_logging, worker_init, worker_process_init

from worker import pipeline
from worker.celery_app import QUEUE_FLUSH, QUEUE_INGEST, app, visibility_timeout
from worker.events import ChangeEvent
from worker.leadlex import shared_client
from worker.logs import setup_celery_logging
from worker.mapping import MappingError, load_mapping
from worker.settings import Settings, SettingsError, load_settings

log = logging.getLogger("leadlex_sync.worker")
# One log shape for Celery workers and beat (JSON in production, see worker/logs.py).
setup_logging.connect(setup_celery_logging, weak=False)

_runtime: pipeline.Runtime | None = None
_runtime_pid: int | None = None

# Test seam (see pipeline.Runtime.seam): a test-only Celery app module sets it before the
# worker builds its Runtime; production never does.
runtime_seam: Callable[[str, str], None] | None = None


def _dispatch_flush(contact: str, countdown: float) -> None:
    flush_contact.apply_async(args=[contact], countdown=countdown or None, queue=QUEUE_FLUSH)


def _dispatch_ingest(events: list[dict[str, Any]]) -> None:
    ingest_batch.apply_async(args=[events], queue=QUEUE_INGEST)


def build_runtime(settings: Settings, client: redis.Redis | None = None) -> pipeline.Runtime:
    """The pipeline's dependencies for this process, from settings (and a Redis client)."""
    api_key = settings.leadlex_api_key.get_secret_value() if settings.leadlex_api_key else ""
    extra: dict[str, Any] = {"seam": runtime_seam} if runtime_seam is not None else {}
    return pipeline.Runtime(
        settings=settings,
        redis=client or redis.Redis.from_url(settings.redis_url, health_check_interval=30),
        mapping=load_mapping(settings.mapping_file, settings.default_phone_region),
        client_factory=lambda: shared_client(
            settings.leadlex_base_url, api_key, settings.leadlex_timeout_seconds
        ),
        dispatch_flush=_dispatch_flush,
        dispatch_ingest=_dispatch_ingest,
        lease_seconds=settings.flush_lease_seconds,
        **extra,
    )


def runtime() -> pipeline.Runtime:
    """This process's Runtime, built on first use (and again after a fork)."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime = build_runtime(load_settings())
        _runtime_pid = os.getpid()
    return _runtime


@worker_init.connect
def on_worker_init(**_: Any) -> None:
    """Validate settings and the mapping file before the worker takes any message."""
    try:
        settings = load_settings()
        load_mapping(settings.mapping_file, settings.default_phone_region)
    except (SettingsError, MappingError) as err:
        print(f"leadlex-sync: {err}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)


@worker_process_init.connect
def on_process_init(**_: Any) -> None:
    global _runtime
    _runtime = None


class _Task(Task):
    # Redis errors: the message is not acked and comes back (acks_late); nothing is lost.
    autoretry_for = (redis.RedisError,)
    retry_backoff = True
    # Invariant 7: even these retry countdowns stay well under the visibility timeout.
    retry_backoff_max = max(1, min(60, visibility_timeout() // 2))
    max_retries = None


@app.task(name="leadlex_sync.ingest_batch", base=_Task, bind=True, acks_on_failure_or_timeout=False)
def ingest_batch(self: Task, events: list[dict[str, Any]]) -> dict[str, int]:
    """Ingest a batch of ChangeEvent dicts (one receiver request)."""
    rt = runtime()
    outcomes: dict[str, int] = {}
    for data in events:
        try:
            event = ChangeEvent.from_dict(data)
            outcome = pipeline.ingest(rt, event)
        except redis.RedisError:
            raise
        except Exception as exc:
            log.exception("ingest failed; event dead-lettered")
            rt.dlq.add(
                "ingest_error",
                source=str(data.get("source", "")),
                payload=data,
                details={"error": type(exc).__name__},
            )
            rt.metrics.incr("dead_lettered", reason="ingest_error")
            rt.state.inbox_done([str(data.get("fingerprint", ""))])  # taken in: dead-lettered
            outcome = "ingest_error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


@app.task(name="leadlex_sync.flush_contact", base=_Task, bind=True)
def flush_contact(self: Task, contact: str) -> str:
    """Send one coalesced PATCH for a LeadLex contact (or park it)."""
    return pipeline.flush(runtime(), contact).outcome


@app.task(name="leadlex_sync.pump", base=_Task, bind=True)
def pump(self: Task) -> int:
    """Periodic (beat, every second): dispatch due flushes, probe an open circuit, enqueue
    again acknowledged events the broker lost, retry parked lookups, and settle creates
    whose answer was lost."""
    rt = runtime()
    dispatched = pipeline.pump(rt)
    pipeline.recover_lost(rt)
    pipeline.retry_unresolved(rt)
    pipeline.settle_creates(rt)
    return dispatched
