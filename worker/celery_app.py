"""The Celery application: safe delivery settings, explicit task names, queues.

Only the broker URL comes from the environment at import time (`REDIS_URL`), so
`celery -A worker ...` and the receiver can import this without the full
settings; everything else is validated when a worker process starts
(see worker.tasks.on_worker_init).
"""

from __future__ import annotations

import os

from celery import Celery

from worker.settings import load_settings

QUEUE_INGEST = "ingest"
QUEUE_FLUSH = "flush"
QUEUE_CONTROL = "control"


def _broker_url() -> str:
    try:
        return load_settings(require_leadlex=False).redis_url
    except Exception:  # noqa: BLE001 - a bad URL is reported properly at worker start-up
        return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


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


app = Celery("leadlex_sync", include=["worker.tasks", "pull_sources.hubspot_journal.tasks"])
app.conf.update(
    broker_url=_broker_url(),
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
    },
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
    task_default_queue=QUEUE_INGEST,
    task_routes={
        "leadlex_sync.ingest_batch": {"queue": QUEUE_INGEST},
        "leadlex_sync.flush_contact": {"queue": QUEUE_FLUSH},
        "leadlex_sync.pump": {"queue": QUEUE_CONTROL},
        "leadlex_sync.probe_circuit": {"queue": QUEUE_CONTROL},
        "leadlex_sync.poll_hubspot_journal": {"queue": QUEUE_CONTROL},
    },
    task_publish_retry=True,
    task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
    beat_schedule={
        "pump": {"task": "leadlex_sync.pump", "schedule": 1.0, "options": {"expires": 5}},
        **_journal_schedule(),
    },
    timezone="UTC",
    enable_utc=True,
    worker_hijack_root_logger=False,
    worker_cancel_long_running_tasks_on_connection_loss=True,
)
