"""`leadlex-sync status`: budget, backlog, forecast, pause and circuit."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click
import redis

from cli.context import (
    main,
    open_redis,
    redis_origin,
    safe_url,
    settings_or_exit,
)
from worker.settings import Settings

# Beat runs the pump every second; this long without a run means no beat is running.
PUMP_SILENT_SECONDS = 30.0


def effective_limits(settings: Settings, client: redis.Redis) -> tuple[int, int, str, str]:
    """(per minute, daily limit, where each came from): one source each, never mixed.

    The workers' own figures (published at start, worker.presence) win over this shell's
    configuration, which may differ; the stored X-RateLimit-Limit of today (LeadLex's
    headers) wins for the daily limit (Budget.status applies it)."""
    from worker import presence

    reported = presence.worker_limits(client)
    if reported.get("per_minute") and reported.get("daily_limit"):
        origin = f"the workers' configuration ({reported.get('origin', '?')})"
        return int(reported["per_minute"]), int(reported["daily_limit"]), origin, origin
    origin = f"this shell's configuration ({presence.limits_origin(settings)}); no worker reported"
    return settings.rate_per_minute, settings.daily_limit, origin, origin


def status_report(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    """Budget, backlog, drain forecast, queues, pump, pause and circuit state, as a dict."""
    from worker import presence
    from worker.celery_app import QUEUES
    from worker.clock import redis_time
    from worker.deadletter import INVALID_STREAM, DeadLetters
    from worker.metrics import Metrics
    from worker.ratelimit import DAY_KEY, Budget, Circuit, utc_day
    from worker.state import State

    per_minute, daily_limit, minute_from, daily_from = effective_limits(settings, client)
    budget = Budget(client, per_minute, daily_limit).status()
    now = redis_time(client)  # the clock the budget and the pump decide on
    if client.hget(DAY_KEY.format(day=utc_day(now)), "limit") is not None:
        daily_from = "LeadLex's rate headers today (X-RateLimit-Limit)"
    circuit = Circuit(client).state()
    state = State(client)
    backlog = state.due_count()
    queues = presence.queue_states(client, QUEUES, now=now)
    stranded = presence.stranded_detail(queues)
    pump_at = presence.pump_last_run(client)
    pump_silent = pump_at is None or now - pump_at > PUMP_SILENT_SECONDS
    # Drain forecast: per-minute pace, but the daily quota caps what can go before reset.
    left_today = max(0, budget.daily_remaining)
    if backlog <= left_today:
        drain_at = now + 60.0 * backlog / max(1, budget.per_minute)
    else:
        rest = backlog - left_today
        days = (rest - 1) // max(1, budget.daily_limit)
        drain_at = (
            budget.reset_at
            + days * 86_400
            + 60.0 * (rest - days * budget.daily_limit) / max(1, budget.per_minute)
        )
    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if t else None  # noqa: E731
    # A forecast only holds while something drains the backlog.
    not_draining = stranded or (
        "no pump has run for over 30 s: start `celery -A worker beat`"
        if backlog and pump_silent
        else ""
    )
    return {
        "redis": {"url": safe_url(settings.redis_url), "from": redis_origin()},
        "budget": {
            "per_minute": budget.per_minute,
            "per_minute_from": minute_from,
            "daily_limit": budget.daily_limit,
            "daily_limit_from": daily_from,
            "daily_remaining": budget.daily_remaining,
            "minute_used": budget.minute_used,
            "reset_at": iso(budget.reset_at),
        },
        "backlog": {
            "contacts_waiting": backlog,
            "oldest_due": iso(state.oldest_due() or 0),
            "drains_by": iso(drain_at) if backlog and not not_draining else None,
            "not_draining": not_draining or None,
            "unlinked_records": state.count_unlinked(),
            "lookups_pending": state.count_resolve_retries(),
            "deleted_records": state.count_deleted(),
        },
        "queues": {
            q.name: {"messages": q.messages, "consumers": q.consumers, "stranded": q.stranded}
            for q in queues
        },
        "queues_problem": stranded or None,
        "pump_last_run": iso(pump_at) if pump_at else None,
        "paused_until": iso(budget.paused_until) if budget.paused_until > now else None,
        "pause_reason": budget.pause_reason if budget.paused_until > now else "",
        "circuit": {"open": circuit.open, "reason": circuit.reason, "detail": circuit.detail},
        "dead_letters": DeadLetters(client).count(),
        # Issue 11: invalid-input letters live in a capped stream; trimmed ones are counted.
        "dead_letters_invalid": int(client.xlen(INVALID_STREAM)),
        "dead_letters_trimmed": Metrics(client).value(
            "dead_letters_trimmed", reason="invalid_event"
        ),
        # Notes LeadLex cannot tell us were applied: an operator decides (dlq replay / drop).
        "notes_uncertain": sum(1 for _ in DeadLetters(client).iter("notes_uncertain")),
        "links": state.count_links(),
        **sources_report(settings, client, now),
        **onboarding_report(client),
        "salesforce_cdc": _cdc_report(client),
        "warnings": (
            ["Salesforce accepts unauthenticated messages (SALESFORCE_ALLOW_UNAUTHENTICATED)"]
            if settings.salesforce_org_ids and settings.salesforce_token is None
            else []
        ),
    }


def onboarding_report(client: redis.Redis) -> dict[str, Any]:
    """Onboarding (issue 13): the last reconcile's drift and the backfill queue."""
    from worker.onboarding.backfill import QUEUE, STATE
    from worker.onboarding.reconcile import last_skip, latest

    total, released = client.hmget(STATE, ["total", "released"])
    drift = latest(client)
    skip = last_skip(client)
    if skip and skip["at"] <= (drift or {}).get("at", 0):
        skip = {}  # a reconcile ran after the skip
    for entry in (drift, skip):
        if entry:
            entry["at"] = datetime.fromtimestamp(entry["at"], UTC).isoformat(timespec="seconds")
    return {
        "drift": drift or None,
        "reconcile_skipped": skip or None,
        "backfill": {
            "total": int(total or 0),
            "released": int(released or 0),
            "queued": int(client.llen(QUEUE)),
        },
    }


GAP_ALERT_SECONDS = 7 * 86_400  # an expired journal offset is reported for a week


def sources_report(settings: Settings, client: redis.Redis, now: float) -> dict[str, Any]:
    """Each source's lag, the HubSpot journal's position, and alert lines (hubspot-2026)."""
    from pull_sources.hubspot_journal.position import journal_statuses
    from worker.source_lag import source_lags

    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if t else None  # noqa: E731
    sources = {
        lag.source: {
            "newest_event_age_seconds": round(lag.age_seconds(now), 1),
            "last_batch_at": iso(lag.last_batch_at),
        }
        for lag in source_lags(client)
    }
    journals = []
    alerts = []
    for js in journal_statuses(client):
        lag = js.lag_seconds(now)
        journals.append(
            {
                "scope": js.scope,
                "offset": js.offset,
                "lag_seconds": None if lag is None else round(lag, 1),
                "entries": js.entries,
                "events": js.events,
                "last_poll_at": iso(js.last_poll_at),
                "at_tip_at": iso(js.tip_at),
                "gaps": js.gaps,
                "last_gap_at": iso(js.last_gap_at),
                "last_error": js.last_error,
            }
        )
        if js.gaps and now - js.last_gap_at < GAP_ALERT_SECONDS:
            alerts.append(
                f"HubSpot journal ({js.scope}): offset expired {js.gaps} time(s), last at "
                f"{iso(js.last_gap_at)}; changes older than the journal's 3 days may be "
                "missing (docs/operations.md: recovering after an outage)"
            )
        if js.last_error:
            alerts.append(f"HubSpot journal ({js.scope}): last poll failed: {js.last_error}")
        stale_after = max(60.0, 5 * settings.hubspot_journal_poll_seconds)
        if settings.hubspot_journal == "on" and now - js.last_poll_at > stale_after:
            alerts.append(
                f"HubSpot journal ({js.scope}): not polled since {iso(js.last_poll_at)} "
                "(is celery beat running?)"
            )
    if settings.hubspot_journal == "on" and not journals:
        alerts.append("HubSpot journal: HUBSPOT_JOURNAL=on but never polled (is beat running?)")
    return {"sources": sources, "hubspot_journal": journals, "alerts": alerts}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Budget left today, its reset, the backlog and when it drains, pause/circuit state."""
    settings = settings_or_exit()
    report = status_report(settings, open_redis(settings))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    b, q = report["budget"], report["backlog"]
    click.echo(f"redis      {report['redis']['url']} ({report['redis']['from']})")
    click.echo(
        f"budget     {b['daily_remaining']}/{b['daily_limit']} calls left today, "
        f"{b['per_minute']}/min; resets {b['reset_at']}"
    )
    click.echo(f"limits     per minute from {b['per_minute_from']}")
    click.echo(f"           daily from {b['daily_limit_from']}")
    click.echo(
        f"backlog    {q['contacts_waiting']} contacts waiting"
        + (f", drains by {q['drains_by']}" if q["drains_by"] else "")
        + (", NOT draining" if q["not_draining"] else "")
        + f"; {q['unlinked_records']} records with parked events"
        + f" ({q['lookups_pending']} awaiting a lookup retry)"
        + f"; {q['deleted_records']} records deleted in the CRM"
    )
    click.echo(
        "queues     "
        + ", ".join(
            f"{name} {v['messages']} waiting ({v['consumers']} consumer"
            f"{'' if v['consumers'] == 1 else 's'})"
            for name, v in report["queues"].items()
        )
    )
    if q["not_draining"]:
        click.echo(f"PROBLEM    {q['not_draining']}")
    elif report["queues_problem"]:
        click.echo(f"PROBLEM    {report['queues_problem']}")
    click.echo(f"pump       last ran {report['pump_last_run'] or 'never (is beat running?)'}")
    if report["paused_until"]:
        click.echo(f"paused     until {report['paused_until']} ({report['pause_reason']})")
    c = report["circuit"]
    click.echo("circuit    " + (f"OPEN ({c['reason']}): {c['detail']}" if c["open"] else "closed"))
    click.echo(f"dead letters {report['dead_letters']}; links {report['links']}")
    for name, lag in report["sources"].items():
        click.echo(
            f"source     {name}: newest change {lag['newest_event_age_seconds']}s old, "
            f"last batch {lag['last_batch_at']}"
        )
    for js in report["hubspot_journal"]:
        click.echo(
            f"journal    hubspot ({js['scope']}): offset {js['offset']}, lag {js['lag_seconds']}s, "
            f"{js['entries']} entries / {js['events']} events, last poll {js['last_poll_at']}"
        )
    for line in report["alerts"]:
        click.echo(f"ALERT      {line}")
    click.echo(
        f"dead letters {report['dead_letters']} ({report['dead_letters_invalid']} invalid input"
        + (
            f", {report['dead_letters_trimmed']} older invalid ones trimmed"
            if report["dead_letters_trimmed"]
            else ""
        )
        + f"); links {report['links']}"
    )
    for warning in report["warnings"]:
        click.echo(f"WARNING    {warning}")
    drift, fill = report["drift"], report["backfill"]
    if drift:
        reasons = ", ".join(f"{k} {v}" for k, v in drift["reasons"].items() if v) or "none"
        click.echo(
            f"drift      {drift['fields']} fields on {drift['contacts']} contacts at the last "
            f"reconcile ({drift['at']}): {reasons}"
        )
    skipped = report["reconcile_skipped"]
    if skipped:
        click.echo(f"reconcile  skipped at {skipped['at']}: {skipped['reason']}")
    if fill["total"]:
        click.echo(
            f"backfill   {fill['released']}/{fill['total']} released, {fill['queued']} queued "
            "(`leadlex-sync backfill` for the ETA)"
        )
    if report["notes_uncertain"]:
        click.echo(
            f"notes uncertain {report['notes_uncertain']}: check LeadLex, then "
            "`dlq replay ID` (append) or `dlq drop ID` (it is there); "
            "`dlq list --reason notes_uncertain`"
        )
    for topic, cdc in sorted(report["salesforce_cdc"].items()):
        position, alert = cdc.get("position") or {}, cdc.get("alert")
        at = position.get("at")
        stored = f"replay id stored {int(time.time() - at)}s ago" if at else "no replay id"
        line = f"cdc        {topic}: {stored}"
        if alert:
            line += f"; ALERT {datetime.fromtimestamp(alert['at'], UTC):%Y-%m-%d %H:%M}Z: "
            line += str(alert["message"])
        click.echo(line)


def _cdc_report(client: redis.Redis) -> dict[str, Any]:
    """Salesforce CDC: per `{org}:{topic}` the stored replay id's age and the last alert."""
    from pull_sources.salesforce_cdc.replay_store import ReplayStore

    return ReplayStore.overview(client)
