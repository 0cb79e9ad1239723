"""`leadlex-sync config check`."""

from __future__ import annotations

import json

import click

from cli.context import (
    fail,
    main,
    redis_origin,
    safe_url,
    settings_or_exit,
)
from worker.logs import merged_environ
from worker.settings import Settings


def config_warnings(settings: Settings) -> list[str]:
    """What is valid but leaves something idle or unable to start (one line each)."""
    out = []
    if not (
        settings.hubspot_client_secret
        or settings.salesforce_org_ids
        or settings.generic_webhook_secret
    ):
        out.append(
            "no source configured: the receiver refuses every webhook; set "
            "HUBSPOT_CLIENT_SECRET, SALESFORCE_ORG_IDS or GENERIC_WEBHOOK_SECRET"
        )
    auth = [p for p in merged_environ().get("FLOWER_BASIC_AUTH", "").split(",") if p.strip()]
    if not auth or not all(":" in p for p in auth):
        out.append(
            "FLOWER_BASIC_AUTH: missing or not user:password; the Procfile's Flower "
            "(deploy/flowerconfig.py) will refuse to start"
        )
    return out


@main.group()
def config() -> None:
    """Check and show the configuration."""


@config.command("check")
def config_check() -> None:
    """Validate what every process checks at start (settings, mapping file); warn about what
    would leave the product idle; print the effective config, secrets masked."""
    from worker.preflight import check
    from worker.settings import SettingsError

    try:
        check(require_leadlex=True)
    except SettingsError as err:
        fail(str(err), 2)
    settings = settings_or_exit(require_leadlex=True)
    for warning in config_warnings(settings):
        click.echo(f"leadlex-sync: warning: {warning}", err=True)
    if settings.salesforce_instance_url is not None:  # CDC configured: it must be complete
        problem = settings.salesforce_cdc_problem()
        if problem:
            fail(problem, 2)
    effective = settings.masked()
    effective["REDIS_URL"] = safe_url(settings.redis_url)
    effective["redis_from"] = redis_origin()
    effective["effective_rate_per_minute"] = settings.rate_per_minute
    effective["effective_daily_limit"] = settings.daily_limit
    click.echo(json.dumps(effective, indent=2, default=str))
    click.echo("configuration OK", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
