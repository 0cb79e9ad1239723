"""Liveness, readiness and Prometheus metrics.

- `GET /healthz`: 200 {"status": "ok"} while the process serves requests.
- `GET /readyz`: runs every readiness check registered in
  `app.extensions[READINESS_CHECKS]` (a list of callables returning a `Check`); 200 when
  all pass, else 503; the body lists each check. Built in: `redis` (PING) and `settings`
  (at least one source configured). More can be added with `add_readiness_check`.
  A check with `required=False` reports without turning the answer 503: `queues` (a
  queue holds messages and no worker consumes it) makes the status "degraded", since the
  receiver itself still records events safely and must keep taking them.
- `GET /metrics`: the shared Redis-held counters (worker.metrics.RedisCollector) as
  Prometheus text, from a fresh registry per scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from webhook_app.errors import unavailable
from webhook_app.intake import current_receiver
from worker.celery_app import QUEUES
from worker.metrics import RedisCollector
from worker.presence import queue_states, stranded_detail
from worker.ratelimit import Budget, Circuit
from worker.state import State

READINESS_CHECKS = "leadlex_sync.readiness"

blueprint = Blueprint("health", __name__)


@dataclass(frozen=True, slots=True)
class Check:
    """The result of one readiness check; `detail` must not contain secrets."""

    name: str
    ok: bool
    detail: str = ""
    required: bool = True


ReadinessCheck = Callable[[], Check]


def add_readiness_check(app: Flask, check: ReadinessCheck) -> None:
    """Register one more check for `/readyz` (e.g. the LeadLex circuit)."""
    app.extensions.setdefault(READINESS_CHECKS, []).append(check)


def redis_check() -> Check:
    try:
        current_receiver().redis.ping()
    except redis.RedisError as exc:
        return Check("redis", False, f"PING failed: {type(exc).__name__}")
    return Check("redis", True, "PING ok")


def settings_check() -> Check:
    settings = current_receiver().settings
    sources = [
        name
        for name, configured in (
            ("hubspot", settings.hubspot_client_secret is not None),
            ("salesforce", bool(settings.salesforce_org_ids)),
            ("generic", settings.generic_webhook_secret is not None),
        )
        if configured
    ]
    if not sources:
        return Check(
            "settings",
            False,
            "no source configured: set HUBSPOT_CLIENT_SECRET, SALESFORCE_ORG_IDS "
            "or GENERIC_WEBHOOK_SECRET",
        )
    detail = "sources: " + ", ".join(sources)
    if settings.salesforce_org_ids and settings.salesforce_token is None:
        detail += (
            "; WARNING: salesforce is UNAUTHENTICATED (SALESFORCE_ALLOW_UNAUTHENTICATED=true, "
            "local tests only)"
        )
    return Check("settings", True, detail)


def circuit_check() -> Check:
    """Not ready while LeadLex refused our key (401/403): delivery is stopped."""
    state = Circuit(current_receiver().redis).state()
    if state.open:
        return Check("leadlex_circuit", False, f"open: {state.reason}; fix LEADLEX_API_KEY")
    return Check("leadlex_circuit", True, "closed")


def queues_check() -> Check:
    """Every product queue that holds messages has a live consumer (worker.presence)."""
    states = queue_states(current_receiver().redis, QUEUES)
    stranded = stranded_detail(states)
    if stranded:
        return Check("queues", False, stranded, required=False)
    waiting = ", ".join(f"{s.name} {s.messages}" for s in states)
    return Check("queues", True, f"messages waiting: {waiting}", required=False)


def source_gauges(client: redis.Redis, now: float) -> list[Any]:
    """Per-source lag and the HubSpot journal's position (hubspot-2026)."""
    from pull_sources.hubspot_journal.position import journal_statuses
    from worker.source_lag import source_lags

    out: list[Any] = [
        (
            "source_newest_event_age_seconds",
            "Age of the newest CRM change each source handed over",
            lag.age_seconds(now),
            {"source": lag.source},
        )
        for lag in source_lags(client)
    ]
    for js in journal_statuses(client):
        scope = {"scope": js.scope}
        lag = js.lag_seconds(now)
        if lag is not None:
            out.append(
                ("hubspot_journal_lag_seconds", "Age of the newest journal change", lag, scope)
            )
        out.append(
            (
                "hubspot_journal_last_poll_timestamp_seconds",
                "When the journal poller last ran",
                js.last_poll_at,
                scope,
            )
        )
        out.append(
            ("hubspot_journal_entries_total", "Journal entries handed over", js.entries, scope)
        )
    return out


def live_gauges() -> list[Any]:
    """Gauges read from the shared state at scrape time: budget, backlog, circuit, lag."""
    receiver = current_receiver()
    settings = receiver.settings
    budget = Budget(receiver.redis, settings.rate_per_minute, settings.daily_limit).status()
    state = State(receiver.redis)
    return [
        *source_gauges(receiver.redis, time.time()),
        ("budget_daily_remaining", "LeadLex calls left today", float(budget.daily_remaining)),
        ("budget_reset_timestamp_seconds", "When the daily budget resets", budget.reset_at),
        ("budget_paused_until_timestamp_seconds", "All workers paused until", budget.paused_until),
        ("backlog_contacts", "Contacts with staged changes waiting", float(state.due_count())),
        (
            "circuit_open",
            "1 while LeadLex refuses our key",
            float(Circuit(receiver.redis).is_open()),
        ),
        (
            "queues_stranded",
            "Queues holding messages that no live worker consumes",
            float(sum(s.stranded for s in queue_states(receiver.redis, QUEUES))),
        ),
    ]


def _run(check: ReadinessCheck) -> Check:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a failing check reports "not ready", not a 500
        return Check(getattr(check, "__name__", "check"), False, type(exc).__name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    """Every readiness check passes (200) or not (503); the body lists each one."""
    results = [_run(check) for check in current_app.extensions.get(READINESS_CHECKS, [])]
    ready = all(r.ok for r in results if r.required)
    degraded = ready and not all(r.ok for r in results)
    response = jsonify(
        {
            "status": ("degraded" if degraded else "ready") if ready else "not_ready",
            "checks": {r.name: {"ok": r.ok, "detail": r.detail} for r in results},
        }
    )
    response.status_code = 200 if ready else 503
    return response


@blueprint.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition of the shared counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(current_receiver().redis, gauges=live_gauges))
    try:
        text = generate_latest(registry)
    except redis.RedisError:
        raise unavailable("metrics_unavailable", "Redis did not answer; retry") from None
    return Response(text, status=200, content_type=CONTENT_TYPE_LATEST)


__all__ = ["Check", "ReadinessCheck", "add_readiness_check", "blueprint"]
