"""Celery tasks: thin wrappers that rebuild values from JSON and call worker.pipeline.

Task names are explicit and stable (`leadlex_sync.*`) so renaming code never strands
queued messages. Arguments are ids only, so Flower never shows personal data: a contact
id (a LeadLex UUID) for a flush, and event fingerprints for an ingest batch, whose
events the worker reads from the inbox (worker.handoff). An ingest message of the old
shape (a list of event dicts, queued before an upgrade) is still accepted.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Task
from celery.signals import (
    beat_init,
    heartbeat_sent,
    setup_logging,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from worker import pipeline, presence
from worker.broker_wire import task_envelope
from worker.celery_app import (
    HOUSEKEEPING_TASKS,
    QUEUE_FLUSH,
    app,
    visibility_timeout,
)
from worker.events import ChangeEvent
from worker.handoff import ingest_message_args, load_events, record_events
from worker.leadlex import shared_client
from worker.logs import setup_celery_logging
from worker.mapping import load_mapping
from worker.onboarding import backfill
from worker.redis_connect import connect
from worker.settings import Settings, load_settings

log = logging.getLogger("leadlex_sync.worker")
FLUSH_TASK = "leadlex_sync.flush_contact"
# One log shape for Celery workers and beat (JSON in production, see worker/logs.py).
setup_logging.connect(setup_celery_logging, weak=False)

_runtime: pipeline.Runtime | None = None
_runtime_pid: int | None = None

# Test seam (see pipeline.Runtime.seam): a test-only Celery app module sets it before the
# worker builds its Runtime; production never does.
runtime_seam: Callable[[str, str], None] | None = None


def _dispatch_flush(contact: str, countdown: float) -> None:
    flush_contact.apply_async(args=[contact], countdown=countdown or None, queue=QUEUE_FLUSH)


def dispatch_flushes(client: redis.Redis, contacts: list[str], countdown: float) -> None:
    """One flush message per contact, all in ONE round trip: Celery's own message written as
    kombu's Redis transport stores it (worker.broker_wire, as the receiver does; REDIS_URL is
    the broker), instead of one apply_async (a publish and a "task-sent" event) each.
    Flower lists these flushes when a worker receives them."""
    pipe = client.pipeline(transaction=False)
    for contact in contacts:
        key, envelope = task_envelope(
            app,
            FLUSH_TASK,
            [contact],
            queue=QUEUE_FLUSH,
            argsrepr=repr([contact]),
            countdown=countdown,
        )
        pipe.lpush(key, envelope)
    pipe.execute()


def _dispatch_ingest(client: redis.Redis, events: list[dict[str, Any]]) -> None:
    """Record `events` in the inbox, then enqueue one ingest message of their refs."""
    pipe = client.pipeline(transaction=True)
    refs = record_events(pipe, events, time.time(), refresh=True)
    pipe.execute()
    ingest_batch.apply_async(**ingest_message_args(refs, "replayed"))


def build_runtime(settings: Settings, client: redis.Redis | None = None) -> pipeline.Runtime:
    """The pipeline's dependencies for this process, from settings (and a Redis client)."""
    api_key = settings.leadlex_api_key.get_secret_value() if settings.leadlex_api_key else ""
    client = client or connect(
        settings.redis_url, master=settings.redis_sentinel_master, health_check_interval=30
    )
    extra: dict[str, Any] = {"seam": runtime_seam} if runtime_seam is not None else {}
    return pipeline.Runtime(
        settings=settings,
        redis=client,
        mapping=load_mapping(settings.mapping_file, settings.default_phone_region),
        client_factory=lambda: shared_client(
            settings.leadlex_base_url, api_key, settings.leadlex_timeout_seconds
        ),
        dispatch_flush=_dispatch_flush,
        dispatch_flushes=functools.partial(dispatch_flushes, client),
        dispatch_ingest=functools.partial(_dispatch_ingest, client),
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


# Settings and the mapping file are validated before a worker or beat starts by the app's
# loader (worker.preflight.Loader): one line naming the variable, exit status 2.

# ---- presence: which queues have a live consumer (worker.presence) ----------------------
_presence: dict[str, Any] = {}


def _presence_client() -> redis.Redis:
    client = _presence.get("client")
    if client is None:
        settings = load_settings(require_leadlex=False)
        client = connect(
            settings.redis_url,
            master=settings.redis_sentinel_master,
            socket_connect_timeout=2,
            socket_timeout=2,
        )
        _presence["client"] = client
    return client


@worker_ready.connect
def on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Announce the queues this worker consumes and the limits it runs with."""
    try:
        queues = [q.name for q in sender.task_consumer.queues]
        _presence.update(hostname=str(sender.hostname), queues=queues)
        settings = load_settings()
        client = _presence_client()
        presence.announce(client, _presence["hostname"], queues)
        presence.record_limits(
            client,
            settings.rate_per_minute,
            settings.daily_limit,
            presence.limits_origin(settings),
        )
    except Exception:
        log.warning("could not announce this worker's queues", exc_info=True)


@heartbeat_sent.connect
def on_heartbeat(**_: Any) -> None:
    """Every Celery heartbeat (2 s) keeps this worker's queue entries alive."""
    if "queues" not in _presence:
        return
    try:
        presence.announce(_presence_client(), _presence["hostname"], _presence["queues"])
    except redis.RedisError:
        log.debug("presence heartbeat failed", exc_info=True)


@worker_shutdown.connect
def on_worker_shutdown(**_: Any) -> None:
    if "queues" not in _presence:
        return
    try:
        presence.withdraw(_presence_client(), _presence["hostname"], _presence["queues"])
    except redis.RedisError:
        log.debug("presence withdraw failed", exc_info=True)


@beat_init.connect
def on_beat_init(sender: Any = None, **_: Any) -> None:
    """Beat sends periodic housekeeping: no "task-sent" events for it, so it does not fill
    Flower's task list (a periodic task that should show there still reports from the
    worker unless it is in HOUSEKEEPING_TASKS, which also run with send_events=False)."""
    app.conf.task_send_sent_event = False


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
def ingest_batch(self: Task, events: list[str | dict[str, Any]]) -> dict[str, int]:
    """Ingest a batch of events (one receiver request): fingerprints of inbox records, or
    (messages queued before the upgrade) ChangeEvent dicts."""
    return ingest_message(runtime(), events)


def ingest_message(rt: pipeline.Runtime, items: list[str | dict[str, Any]]) -> dict[str, int]:
    """The ingest task's work (also what bench/worker.py measures): read the message's
    events from the inbox, ingest them as one batch (`pipeline.ingest_batch`: a few round
    trips for the whole message), dead-letter an event that cannot be ingested; returns
    the count of each outcome. Redis errors propagate (the task retries the message)."""
    outcomes: dict[str, int] = {}
    events: list[ChangeEvent] = []
    sent: dict[str, dict[str, Any]] = {}  # fingerprint -> the event as it came
    for data in load_events(rt.redis, items):
        if data is None:  # its inbox record is gone: it was already taken in
            outcomes["duplicate"] = outcomes.get("duplicate", 0) + 1
            continue
        try:
            events.append(ChangeEvent.from_dict(data))
            sent[events[-1].fingerprint] = data
        except Exception as exc:
            log.exception("ingest failed; event dead-lettered")
            _dead_letter(rt, data, exc)
            outcomes["ingest_error"] = outcomes.get("ingest_error", 0) + 1
    if outcomes.get("duplicate"):
        rt.metrics.incr("events_deduped", outcomes["duplicate"], source="other")

    def failed(event: ChangeEvent, exc: Exception) -> None:
        log.error("ingest failed; event dead-lettered", exc_info=exc)
        _dead_letter(rt, sent.get(event.fingerprint) or event.to_dict(), exc)

    for outcome in pipeline.ingest_batch(rt, events, on_error=failed):
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def _dead_letter(rt: pipeline.Runtime, data: dict[str, Any], exc: Exception) -> None:
    """An event that cannot be ingested: dead letter `ingest_error`, and it is taken in."""
    rt.dlq.add(
        "ingest_error",
        source=str(data.get("source", "")),
        payload=data,
        details={"error": type(exc).__name__},
    )
    rt.metrics.incr("dead_lettered", reason="ingest_error")
    rt.state.inbox_done([str(data.get("fingerprint", ""))])  # taken in: dead-lettered


@app.task(name=FLUSH_TASK, base=_Task, bind=True)
def flush_contact(self: Task, contact: str) -> str:
    """Send one coalesced PATCH for a LeadLex contact (or park it)."""
    return pipeline.flush(runtime(), contact).outcome


# Housekeeping every second: no task events, so Flower lists the syncs people came to see.
@app.task(
    name="leadlex_sync.pump",
    base=_Task,
    bind=True,
    send_events="leadlex_sync.pump" not in HOUSEKEEPING_TASKS,
)
def pump(self: Task) -> int:
    """Periodic (beat, every second): dispatch due flushes, probe an open circuit, enqueue
    again acknowledged events the broker lost, retry parked lookups, and settle creates
    whose answer was lost, and release queued backfill records (live changes first)."""
    rt = runtime()
    presence.pump_ran(rt.redis)
    dispatched = pipeline.pump(rt)
    pipeline.recover_lost(rt)
    pipeline.retry_unresolved(rt)
    pipeline.settle_creates(rt)
    backfill.release(rt)  # onboarding (issue 13): only when no live change waits
    return dispatched


@app.task(name="leadlex_sync.reconcile", base=_Task, bind=True)
def reconcile(self: Task) -> int:
    """Opt-in daily (RECONCILE_DAILY_AT): read LeadLex (the export, else the paged list within
    its share of the day) and record the drift (gauge `leadlex_sync_drift_fields`, `status`);
    never repairs by itself. Returns drifted fields (-1: skipped, reason in `status`)."""
    from worker.onboarding import reconcile as onboarding_reconcile

    try:
        report = onboarding_reconcile.run_daily(runtime())
    except onboarding_reconcile.ReconcileSkipped as err:
        log.warning("daily reconcile skipped", extra={"reason": err.reason})
        return -1
    log.info(
        "reconcile done",
        extra={
            "drift_fields": len(report.drifts),
            "compared": report.compared,
            "leadlex_calls": report.calls,
            "via": report.via,
        },
    )
    return len(report.drifts)
