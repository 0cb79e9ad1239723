"""What every command needs: the `main` group, settings, Redis, the workers' Runtime, and
one-line failures.

Which Redis: REDIS_URL when it is set (environment or `.env`); else, while `leadlex-sync
dev` runs in this directory, dev mode's own Redis, read from `.run/dev.env` (the
hand-shake file dev mode writes at start and removes at stop); else the default address.
Every command that opens Redis says on stderr which one it talks to and why.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import click
import redis

from worker.redis_connect import connect
from worker.settings import Settings, SettingsError, load_settings

SOURCES = ("hubspot", "salesforce", "generic")
LINK_HEADER = ["source", "account", "object_id", "leadlex_id"]

# The dev-mode hand-shake: KEY=value lines (REDIS_URL, RECEIVER_URL, PUBLIC_BASE_URL,
# SIMULATOR_URL, PID), relative to the directory dev mode runs in.
RUN_DIR_NAME = ".run"
DEV_ENV_NAME = "dev.env"

# Where the Redis of this command came from (set by settings_or_exit), for messages.
_redis_origin: list[str] = ["REDIS_URL"]


def fail(message: str, code: int = 1) -> None:
    click.echo(f"leadlex-sync: {message}", err=True)
    sys.exit(code)


def dev_env_path(cwd: Path | None = None) -> Path:
    return (cwd or Path.cwd()) / RUN_DIR_NAME / DEV_ENV_NAME


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_dev_env(cwd: Path | None = None) -> dict[str, str]:
    """What a running `leadlex-sync dev` in this directory published ({} if none runs)."""
    path = dev_env_path(cwd)
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(path).items() if v is not None}
    pid = values.get("PID", "")
    if not pid.isdigit() or not _alive(int(pid)):
        return {}  # left behind by a dev mode that was killed: ignore it
    return values


def settings_or_exit(require_leadlex: bool = False) -> Settings:
    try:
        settings = load_settings(require_leadlex=require_leadlex)
    except SettingsError as err:
        fail(str(err), 2)
        raise  # unreachable
    if "redis_url" in settings.model_fields_set:
        _redis_origin[0] = "REDIS_URL"
        return settings
    dev_url = read_dev_env().get("REDIS_URL")
    if dev_url:
        _redis_origin[0] = f"dev mode's Redis, from {RUN_DIR_NAME}/{DEV_ENV_NAME}"
        return settings.model_copy(update={"redis_url": dev_url})
    _redis_origin[0] = "the default: REDIS_URL is not set and no dev mode runs here"
    return settings


def redis_origin() -> str:
    """Where the Redis URL of this command came from."""
    return _redis_origin[0]


def open_redis(settings: Settings) -> redis.Redis:
    """A client on the command's Redis; says which one on stderr, one line if it is down."""
    where = f"{safe_url(settings.redis_url)} ({redis_origin()})"
    client = connect(
        settings.redis_url,
        master=settings.redis_sentinel_master,
        socket_connect_timeout=3,
        socket_timeout=10,
    )
    try:
        client.ping()
    except (redis.RedisError, OSError):
        hint = ""
        if redis_origin() == "REDIS_URL":
            hint = "; check REDIS_URL"
        elif not read_dev_env():
            hint = "; set REDIS_URL, or run `leadlex-sync dev` in this directory"
        fail(f"Redis does not answer at {where}{hint}", 3)
    click.echo(f"Redis: {where}", err=True)
    return client


def safe_url(url: str) -> str:
    """`url` with any password masked."""
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
