"""`leadlex-sync config check`."""

from __future__ import annotations

import json

import click

from cli.context import (
    fail,
    main,
    safe_url,
    settings_or_exit,
)


@main.group()
def config() -> None:
    """Check and show the configuration."""


@config.command("check")
def config_check() -> None:
    """Validate settings and the mapping file; print the effective config, secrets masked."""
    from worker.mapping import MappingError, load_mapping

    settings = settings_or_exit(require_leadlex=True)
    try:
        load_mapping(settings.mapping_file, settings.default_phone_region)
    except MappingError as err:
        fail(f"MAPPING_FILE: {err}", 2)
    if settings.salesforce_instance_url is not None:  # CDC configured: it must be complete
        problem = settings.salesforce_cdc_problem()
        if problem:
            fail(problem, 2)
    effective = settings.masked()
    effective["REDIS_URL"] = safe_url(settings.redis_url)
    effective["effective_rate_per_minute"] = settings.rate_per_minute
    effective["effective_daily_limit"] = settings.daily_limit
    click.echo(json.dumps(effective, indent=2, default=str))
    click.echo("configuration OK", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
