"""The webhook receiver: verify CRM change events, enqueue them, answer fast.

`gunicorn "webhook_app:create_app()"` (or `webhook_app.wsgi:app`). No LeadLex calls here,
ever; imports flow webhook_app -> worker only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import redis
from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry

from webhook_app.errors import register_error_handlers
from webhook_app.health import (
    add_readiness_check,
    circuit_check,
    queues_check,
    redis_check,
    settings_check,
)
from webhook_app.health import blueprint as health_blueprint
from webhook_app.intake import EXTENSION, Receiver
from webhook_app.signatures import whsec_key
from webhook_app.sources import BLUEPRINTS
from worker.celery_app import app as celery_app
from worker.handoff import Enqueuer
from worker.settings import Settings, SettingsError, load_settings

__all__ = ["create_app"]


def _redis_client(url: str) -> redis.Redis:
    """A client that fails fast (one immediate retry) so a dead Redis means a quick 503."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=2,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )


def _generic_keys(settings: Settings) -> tuple[bytes, ...]:
    if settings.generic_webhook_secret is None:
        return ()
    try:
        return tuple(
            whsec_key(s) for s in settings.generic_webhook_secret.get_secret_value().split()
        )
    except ValueError as exc:
        raise SettingsError(f"GENERIC_WEBHOOK_SECRET: {exc}") from None


def create_app(
    settings: Settings | None = None,
    *,
    redis_client: redis.Redis | None = None,
    clock: Callable[[], float] = time.time,
) -> Flask:
    """Build the receiver app; `settings` default to the environment (LeadLex key not needed)."""
    if settings is None:
        settings = load_settings(require_leadlex=False)
    # An explicit root path: editable installs import through a hook Flask cannot ask.
    app = Flask(__name__, root_path=os.path.dirname(os.path.abspath(__file__)))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    # The broker is the configured Redis (the Enqueuer also publishes there explicitly).
    celery_app.conf.broker_url = settings.redis_url

    client = redis_client if redis_client is not None else _redis_client(settings.redis_url)
    app.extensions[EXTENSION] = Receiver(
        settings=settings,
        redis=client,
        enqueuer=Enqueuer(celery_app, client, settings.redis_url),
        clock=clock,
        generic_keys=_generic_keys(settings),
    )
    add_readiness_check(app, redis_check)
    add_readiness_check(app, settings_check)
    add_readiness_check(app, circuit_check)
    add_readiness_check(app, queues_check)

    for blueprint in (*BLUEPRINTS, health_blueprint):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    return app
