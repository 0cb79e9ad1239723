"""`leadlex-sync salesforce ...`: the Change Data Capture subscriber, its simulator, a sample."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import click

from cli.context import fail, main, open_redis, settings_or_exit


@main.group()
def salesforce() -> None:
    """Salesforce Change Data Capture over the Pub/Sub API."""


def _wait_for_signal() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


@salesforce.command()
@click.option(
    "--if-configured",
    is_flag=True,
    help="Idle (instead of failing) when SALESFORCE_INSTANCE_URL is not set: the Procfile's "
    "`cdc` line uses it so a deployment without CDC keeps running.",
)
def subscribe(if_configured: bool) -> None:
    """Stream Contact/Lead change events (SALESFORCE_CDC_TOPICS) into the worker; runs until
    SIGTERM/Ctrl-C, resuming from the stored replay ids."""
    import httpx

    from pull_sources.salesforce_cdc.auth import AuthError, Credentials, TokenSource
    from pull_sources.salesforce_cdc.change_events import OriginFilter
    from pull_sources.salesforce_cdc.subscriber import (
        Subscriber,
        SubscriberConfig,
        open_channel,
    )
    from worker.celery_app import app
    from worker.handoff import Enqueuer
    from worker.logs import configure_logging, options_from_env

    fmt, level, secrets = options_from_env()
    configure_logging(fmt, level, service="cdc", secrets=secrets)  # the process's own name
    settings = settings_or_exit()
    if if_configured and settings.salesforce_instance_url is None:
        click.echo("leadlex-sync: Salesforce CDC is not configured; idle", err=True)
        _wait_for_signal()
        return
    problem = settings.salesforce_cdc_problem()
    if problem:
        fail(problem, 2)
    assert settings.salesforce_instance_url is not None  # checked above
    assert settings.salesforce_client_id is not None
    client = open_redis(settings)
    app.conf.broker_url = settings.redis_url
    secret = settings.salesforce_client_secret
    credentials = Credentials(
        instance_url=settings.salesforce_instance_url,
        client_id=settings.salesforce_client_id,
        client_secret=secret.get_secret_value() if secret else None,
        username=settings.salesforce_username,
        jwt_key_file=settings.salesforce_jwt_key_file,
        jwt_audience=settings.salesforce_jwt_audience,
    )
    tokens = TokenSource(
        credentials, httpx.Client(timeout=15.0), settings.salesforce_token_refresh_seconds
    )
    try:
        session = tokens.current()
    except AuthError as err:
        fail(f"Salesforce token ({credentials.flow}): {err}", 3 if err.retryable else 2)
        raise  # unreachable
    config = SubscriberConfig(
        topics=tuple(settings.salesforce_cdc_topics),
        batch_size=settings.salesforce_cdc_batch_size,
        initial_replay=settings.salesforce_cdc_initial_replay,
        origin_filter=OriginFilter.of(
            settings.salesforce_cdc_skip_users, settings.salesforce_cdc_skip_origins
        ),
    )
    channel = open_channel(settings.salesforce_pubsub_endpoint, settings.salesforce_pubsub_tls)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    click.echo(
        f"leadlex-sync: subscribing to {', '.join(config.topics)} for org {session.org_id} "
        f"at {settings.salesforce_pubsub_endpoint}",
        err=True,
    )
    Subscriber(
        config, tokens, channel, Enqueuer(app, client, settings.redis_url), client, stop
    ).run()
    channel.close()


@salesforce.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--grpc-port", default=0, type=int, help="Pub/Sub port (0: a free one).")
@click.option("--http-port", default=0, type=int, help="My Domain/token port (0: a free one).")
def sandbox(host: str, grpc_port: int, http_port: int) -> None:
    """Run the local Salesforce Pub/Sub simulator (token endpoint + CDC topics)."""
    from salesforce_sandbox.__main__ import main as sandbox_main

    argv = ["--host", host, "--grpc-port", str(grpc_port), "--http-port", str(http_port)]
    sys.exit(sandbox_main(argv))


@salesforce.command()
@click.option(
    "--instance-url", required=True, help="The simulator's URL (SALESFORCE_INSTANCE_URL)."
)
@click.option("--record", default="0035g00000DEM00AAA", show_default=True, help="Contact id.")
@click.option("--title", default="Head of Sync", show_default=True, help="The new Title.")
def sample(instance_url: str, record: str, title: str) -> None:
    """Make the simulator emit a Contact UPDATE change event (Title and a nulled Phone)."""
    import httpx

    change = {
        "entity": "Contact",
        "change_type": "UPDATE",
        "record_ids": [record],
        "values": {"Title": title},
        "nulled": ["MobilePhone"],
    }
    try:
        response = httpx.post(
            f"{instance_url.rstrip('/')}/_sandbox/changes", json=change, timeout=5
        )
    except httpx.HTTPError as err:
        fail(f"the simulator does not answer at {instance_url}: {type(err).__name__}", 3)
        raise  # unreachable
    if response.status_code != 200:
        fail(f"the simulator refused the change: {response.text[:200]}", 1)
    click.echo(
        f"emitted a Contact UPDATE for {record}: replay id {response.json()['replay_ids'][0]}"
    )
