"""The webhook receiver: verify CRM change events, enqueue them, answer fast.

`gunicorn "webhook_app:create_app()"` (or `webhook_app.wsgi:app`). No LeadLex calls here,
ever; imports flow webhook_app -> worker only.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

import redis
from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry

from webhook_app.errors import register_error_handlers
from webhook_app.fastpath import WebhookFastPath
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
from webhook_app.sources import BLUEPRINTS, SOURCE_MODULES
from worker.celery_app import app as celery_app
from worker.deadletter import DeadLetters
from worker.handoff import Enqueuer
from worker.preflight import check as preflight_check
from worker.redis_connect import broker_url_for, connect
from worker.settings import Settings, SettingsError

__all__ = ["create_app"]

log = logging.getLogger("leadlex_sync.receiver")


def _redis_client(url: str, timeout: float, master: str | None = None) -> redis.Redis:
    """A client that fails fast so a dead or hung Redis means a quick 503 (invariant 2).

    Every command waits at most `timeout` (RECEIVER_REDIS_TIMEOUT_SECONDS) for an answer;
    a broken connection is retried once at once, a timeout never (a hung Redis would
    only hang again)."""
    return connect(
        url,
        master=master,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        health_check_interval=30,
    )


def _warn_insecure(settings: Settings) -> None:
    """One WARNING per weakened default (issue 11), at start-up."""
    legacy = sorted(set(settings.hubspot_signature_versions) - {"v3"})
    if settings.hubspot_client_secret is not None and legacy:
        log.warning(
            "HUBSPOT_SIGNATURE_VERSIONS accepts %s: these signatures carry no timestamp, so "
            "a captured request can be replayed forever; keep only v3 unless your app "
            "still sends v1/v2 only",
            ",".join(legacy),
        )
    if settings.salesforce_org_ids and settings.salesforce_token is None:
        log.warning(
            "SALESFORCE_ALLOW_UNAUTHENTICATED=true: anyone who knows an org id can change "
            "LeadLex data through /webhooks/salesforce; for local tests only"
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
    """Build the receiver app; `settings` default to the environment (LeadLex key not needed).

    With settings from the environment inside gunicorn (a bare `gunicorn
    "webhook_app:create_app()"`, without the shipped `-c deploy/gunicorn.conf.py` that checks
    first), a bad setting is the same one line as in every other process, and the worker
    exits with gunicorn's "app failed to load" status, so the arbiter stops instead of
    printing a traceback per respawned worker."""
    if settings is not None:
        return _build(settings, redis_client, clock)
    try:
        return _build(preflight_check(require_leadlex=False), redis_client, clock)
    except SettingsError as err:
        if "gunicorn.arbiter" not in sys.modules:
            raise
        print(f"leadlex-sync: {err}", file=sys.stderr, flush=True)
        raise SystemExit(_GUNICORN_APP_LOAD_ERROR) from None


# gunicorn.arbiter.Arbiter.APP_LOAD_ERROR: a worker exiting with it halts the server.
_GUNICORN_APP_LOAD_ERROR = 4


def _build(
    settings: Settings, redis_client: redis.Redis | None, clock: Callable[[], float]
) -> Flask:
    # An explicit root path: editable installs import through a hook Flask cannot ask.
    app = Flask(__name__, root_path=os.path.dirname(os.path.abspath(__file__)))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    # The broker is the configured Redis (the Enqueuer also publishes there explicitly).
    celery_app.conf.broker_url = broker_url_for(settings.redis_url)

    timeout = settings.receiver_redis_timeout_seconds
    client = (
        redis_client
        if redis_client is not None
        else _redis_client(settings.redis_url, timeout, settings.redis_sentinel_master)
    )
    _warn_insecure(settings)
    dead_letters = DeadLetters(
        client,
        max_letter_bytes=settings.dlq_max_letter_bytes,
        invalid_maxlen=settings.dlq_invalid_maxlen,
    )
    app.extensions[EXTENSION] = Receiver(
        settings=settings,
        redis=client,
        enqueuer=Enqueuer(
            celery_app,
            client,
            broker_url_for(settings.redis_url),
            dead_letters=dead_letters,
            timeout=timeout,
            # The client and the broker are both REDIS_URL: inbox + message in one MULTI.
            direct_publish=settings.receiver_direct_publish,
            wait_replicas=settings.redis_wait_replicas,
        ),
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
    # The webhook POSTs skip Flask's per-request machinery, with the same answers (issue 14).
    WebhookFastPath.install(app, SOURCE_MODULES)
    return app
