"""The beat-driven Celery task of the journal poller (thin: builds the runtime, calls poll_once)."""

from __future__ import annotations

import os
from typing import Any

import httpx
import redis

from pull_sources.hubspot_journal.api import JournalClient
from pull_sources.hubspot_journal.poller import PollRuntime, poll_once
from pull_sources.hubspot_journal.position import Position
from worker.celery_app import app
from worker.handoff import Enqueuer
from worker.metrics import Metrics
from worker.redis_connect import broker_url_for, connect
from worker.settings import Settings, SettingsError, load_settings

_runtime: tuple[int, PollRuntime] | None = None


def lease_seconds(settings: Settings) -> float:
    """How long one poll may hold the journal (a killed poller delays the next this long)."""
    return max(10.0, 3 * settings.hubspot_journal_poll_seconds)


def build_poll_runtime(settings: Settings, client: redis.Redis | None = None) -> PollRuntime:
    """The poller's dependencies, from settings (HUBSPOT_JOURNAL=on guarantees credentials)."""
    if not settings.hubspot_client_id or settings.hubspot_client_secret is None:
        raise SettingsError("HUBSPOT_CLIENT_ID: required when HUBSPOT_JOURNAL=on")
    client = client or connect(
        settings.redis_url, master=settings.redis_sentinel_master, health_check_interval=30
    )
    portals = frozenset(settings.hubspot_portal_ids)
    journal = JournalClient(
        httpx.Client(timeout=settings.hubspot_journal_timeout_seconds),
        settings.hubspot_api_base_url,
        settings.hubspot_client_id,
        settings.hubspot_client_secret.get_secret_value(),
        scope=settings.hubspot_journal_scope,
        install_portal_id=next(iter(portals)) if len(portals) == 1 else None,
    )
    return PollRuntime(
        client=journal,
        position=Position(client, settings.hubspot_journal_scope),
        enqueuer=Enqueuer(app, client, broker_url_for(settings.redis_url)),
        metrics=Metrics(client),
        start=settings.hubspot_journal_start,
        batch_size=settings.hubspot_journal_batch_size,
        lease_seconds=lease_seconds(settings),
        portals=portals,
    )


def _poll_runtime(settings: Settings) -> PollRuntime:
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        _runtime = (os.getpid(), build_poll_runtime(settings))
    return _runtime[1]


@app.task(name="leadlex_sync.poll_hubspot_journal", ignore_result=True)
def poll_hubspot_journal() -> dict[str, Any]:
    """Periodic (beat, every HUBSPOT_JOURNAL_POLL_SECONDS): read the HubSpot journal."""
    settings = load_settings()
    if settings.hubspot_journal != "on":
        return {"outcome": "off"}
    result = poll_once(_poll_runtime(settings))
    return {"outcome": result.outcome, "entries": result.entries, "events": result.events}
