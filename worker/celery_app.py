"""The Celery application: safe delivery settings, explicit task names, queues.

Only the broker URL comes from the environment at import time (`REDIS_URL`), so
`celery -A worker ...` and the receiver can import this without the full
settings; everything else is validated when a process starts (worker.preflight:
worker, beat and Flower through signals / flowerconfig, the receiver through its
gunicorn config, the CLI itself), and a bad setting is one line naming it.

Queues carry the product prefix (`lls.`) so the product can share a Redis, and are
declared in `task_queues`: a plain `celery -A worker worker` (no `-Q`) consumes every
one of them.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue

from worker.broker_recovery import transport_for
from worker.redis_connect import broker_url_for
from worker.settings import default_redis_url, load_settings

# The product prefix of every queue name (Redis keys use `lls:`, see worker/state.py).
QUEUE_PREFIX = "lls."
QUEUE_INGEST = f"{QUEUE_PREFIX}ingest"
QUEUE_FLUSH = f"{QUEUE_PREFIX}flush"
QUEUE_CONTROL = f"{QUEUE_PREFIX}control"
QUEUES = (QUEUE_INGEST, QUEUE_FLUSH, QUEUE_CONTROL)
# Periodic housekeeping: sent without task events so it does not fill Flower's task list.
HOUSEKEEPING_TASKS = frozenset({"leadlex_sync.pump"})


def _broker_url() -> str:
    try:
        return broker_url_for(load_settings(require_leadlex=False).redis_url)
    except Exception:  # noqa: BLE001 - a bad setting is reported at start-up (worker.preflight)
        # Never fall back to Celery's AMQP default: a URL that cannot work stays a Redis URL
        # that cannot connect, and every process stops at start with one line naming it.
        return default_redis_url()


def visibility_timeout() -> int:
    """Seconds before Redis redelivers an unacked message; every countdown stays well below."""
    return int(os.environ.get("VISIBILITY_TIMEOUT_SECONDS", "3600"))


def _journal_schedule() -> dict[str, dict[str, object]]:
    """Beat entry of the HubSpot journal poller (pull_sources), only with HUBSPOT_JOURNAL=on."""
    try:
        settings = load_settings(require_leadlex=False)
    except Exception:  # noqa: BLE001 - a bad setting is reported properly at worker start-up
        return {}
    if settings.hubspot_journal != "on":
        return {}
    every = settings.hubspot_journal_poll_seconds
    return {
        "poll_hubspot_journal": {
            "task": "leadlex_sync.poll_hubspot_journal",
            "schedule": every,
            "options": {"expires": max(5.0, every)},
        }
    }


def _reconcile_schedule() -> dict[str, dict[str, object]]:
    """Beat entry of the daily reconcile (onboarding, issue 13), only with RECONCILE_DAILY_AT."""
    try:
        settings = load_settings(require_leadlex=False)
    except Exception:  # noqa: BLE001 - a bad setting is reported properly at worker start-up
        return {}
    if settings.reconcile_daily_at == "off":
        return {}
    hour, minute = settings.reconcile_daily_at.split(":")
    return {
        "reconcile": {
            "task": "leadlex_sync.reconcile",
            "schedule": crontab(hour=int(hour), minute=int(minute)),
            "options": {"expires": 3600},
        }
    }


app = Celery(
    "leadlex_sync",
    include=["worker.tasks", "pull_sources.hubspot_journal.tasks"],
    loader="worker.preflight:Loader",
)
BROKER_URL = _broker_url()


def _sentinel_master() -> dict[str, str]:
    """kombu's `master_name` transport option for a sentinel:// REDIS_URL."""
    try:
        master = load_settings(require_leadlex=False).redis_sentinel_master
    except Exception:  # noqa: BLE001 - a bad setting is reported at start-up (worker.preflight)
        return {}
    return {"master_name": master} if master and BROKER_URL.startswith("sentinel://") else {}


app.conf.update(
    broker_url=BROKER_URL,
    broker_transport_options={
        "visibility_timeout": visibility_timeout(),
        # Fail fast when Redis is down: the receiver must answer 503 within the CRM's timeout.
        "socket_connect_timeout": 2,
        "socket_timeout": 2,
        "max_retries": 1,
        # Messages of a worker that died are put back after the visibility timeout; sweep
        # for them often enough that recovery takes about that long, not minutes more.
        "unacked_restore_interval": max(1, min(10, visibility_timeout() // 6)),
        "unacked_restore_throttle": 1,
        **_sentinel_master(),
    },
    # Survive a Redis restart: kombu 5.7 raised AttributeError on a broken connection's
    # close or late ack and the worker exited; see worker/broker_recovery.py.
    broker_transport=transport_for(BROKER_URL),
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    result_backend=None,
    # A message is acked only after the task returns; a killed worker's message is redelivered.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Flower: task events on, and "sent" events so queued tasks show up too.
    worker_send_task_events=True,
    task_send_sent_event=True,
    # Every queue the product uses: `celery -A worker worker` without -Q consumes them all.
    task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
    task_default_queue=QUEUE_INGEST,
    task_routes={
        "leadlex_sync.ingest_batch": {"queue": QUEUE_INGEST},
        "leadlex_sync.flush_contact": {"queue": QUEUE_FLUSH},
        "leadlex_sync.pump": {"queue": QUEUE_CONTROL},
        "leadlex_sync.probe_circuit": {"queue": QUEUE_CONTROL},
        "leadlex_sync.poll_hubspot_journal": {"queue": QUEUE_CONTROL},
        "leadlex_sync.reconcile": {"queue": QUEUE_CONTROL},
    },
    task_publish_retry=True,
    task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
    beat_schedule={
        "pump": {"task": "leadlex_sync.pump", "schedule": 1.0, "options": {"expires": 5}},
        **_journal_schedule(),
        **_reconcile_schedule(),
    },
    timezone="UTC",
    enable_utc=True,
    worker_hijack_root_logger=False,
    worker_cancel_long_running_tasks_on_connection_loss=True,
)
