"""What every command needs: the `main` group, settings, Redis, the workers' Runtime, and
one-line failures."""

from __future__ import annotations

import re
import sys
from typing import Any

import click
import redis

from worker.settings import Settings, SettingsError, load_settings

SOURCES = ("hubspot", "salesforce", "generic")
LINK_HEADER = ["source", "account", "object_id", "leadlex_id"]


def fail(message: str, code: int = 1) -> None:
    click.echo(f"leadlex-sync: {message}", err=True)
    sys.exit(code)


def settings_or_exit(require_leadlex: bool = False) -> Settings:
    try:
        return load_settings(require_leadlex=require_leadlex)
    except SettingsError as err:
        fail(str(err), 2)
        raise  # unreachable


def open_redis(settings: Settings) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=10)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        fail(f"Redis does not answer at REDIS_URL ({safe_url(settings.redis_url)})", 3)
    return client


def safe_url(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def runtime(settings: Settings) -> Any:
    """The workers' pipeline Runtime, for CLI work that dispatches through Celery (the CLI
    itself never calls LeadLex)."""
    from worker.celery_app import app
    from worker.mapping import MappingError
    from worker.tasks import build_runtime

    app.conf.broker_url = settings.redis_url
    try:
        return build_runtime(settings, open_redis(settings))
    except MappingError as err:
        fail(f"MAPPING_FILE: {err}", 2)
        raise  # unreachable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="leadlex-sync")
def main() -> None:
    """Keep LeadLex contacts in step with HubSpot and Salesforce."""
    from worker.logs import configure_logging, options_from_env

    fmt, level, secrets = options_from_env()
    configure_logging(fmt, level, service="cli", secrets=secrets)
