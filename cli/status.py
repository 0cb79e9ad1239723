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
    settings_or_exit,
)
from worker.settings import Settings


def status_report(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    """Budget, backlog, drain forecast, pause and circuit state, as a dict."""
    from worker.deadletter import DeadLetters
    from worker.ratelimit import Budget, Circuit
    from worker.state import State

    budget = Budget(client, settings.rate_per_minute, settings.daily_limit).status()
    circuit = Circuit(client).state()
    state = State(client)
    backlog = state.due_count()
    now = time.time()
    # Drain forecast: per-minute pace, but the daily quota caps what can go before reset.
    left_today = max(0, budget.daily_remaining)
    if backlog <= left_today:
        drain_at = now + 60.0 * backlog / max(1, settings.rate_per_minute)
    else:
        rest = backlog - left_today
        days = (rest - 1) // max(1, budget.daily_limit)
        drain_at = (
            budget.reset_at
            + days * 86_400
            + 60.0 * (rest - days * budget.daily_limit) / max(1, settings.rate_per_minute)
        )
    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if t else None  # noqa: E731
    return {
        "budget": {
            "per_minute": budget.per_minute,
            "daily_limit": budget.daily_limit,
            "daily_remaining": budget.daily_remaining,
            "minute_used": budget.minute_used,
            "reset_at": iso(budget.reset_at),
        },
        "backlog": {
            "contacts_waiting": backlog,
            "oldest_due": iso(state.oldest_due() or 0),
            "drains_by": iso(drain_at) if backlog else None,
            "unlinked_records": state.count_unlinked(),
        },
        "paused_until": iso(budget.paused_until) if budget.paused_until > now else None,
        "pause_reason": budget.pause_reason if budget.paused_until > now else "",
        "circuit": {"open": circuit.open, "reason": circuit.reason, "detail": circuit.detail},
        "dead_letters": DeadLetters(client).count(),
        "links": state.count_links(),
        "salesforce_cdc": _cdc_report(client),
    }


def _cdc_report(client: redis.Redis) -> dict[str, Any]:
    """Salesforce CDC: per `{org}:{topic}` the stored replay id's age and the last alert."""
    from pull_sources.salesforce_cdc.replay_store import ReplayStore

    return ReplayStore.overview(client)


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
    click.echo(
        f"budget     {b['daily_remaining']}/{b['daily_limit']} calls left today, "
        f"{b['per_minute']}/min; resets {b['reset_at']}"
    )
    click.echo(
        f"backlog    {q['contacts_waiting']} contacts waiting"
        + (f", drains by {q['drains_by']}" if q["drains_by"] else "")
        + f"; {q['unlinked_records']} unlinked records parked"
    )
    if report["paused_until"]:
        click.echo(f"paused     until {report['paused_until']} ({report['pause_reason']})")
    c = report["circuit"]
    click.echo("circuit    " + (f"OPEN ({c['reason']}): {c['detail']}" if c["open"] else "closed"))
    click.echo(f"dead letters {report['dead_letters']}; links {report['links']}")
    for topic, cdc in sorted(report["salesforce_cdc"].items()):
        position, alert = cdc.get("position") or {}, cdc.get("alert")
        at = position.get("at")
        stored = f"replay id stored {int(time.time() - at)}s ago" if at else "no replay id"
        line = f"cdc        {topic}: {stored}"
        if alert:
            line += f"; ALERT {datetime.fromtimestamp(alert['at'], UTC):%Y-%m-%d %H:%M}Z: "
            line += str(alert["message"])
        click.echo(line)
