"""A real Salesforce Pub/Sub simulator on loopback, and a subscriber thread against it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
import redis

from pull_sources.salesforce_cdc.auth import Credentials, TokenSource
from pull_sources.salesforce_cdc.change_events import OriginFilter
from pull_sources.salesforce_cdc.subscriber import Subscriber, SubscriberConfig
from salesforce_sandbox.server import SalesforceSandbox, SandboxConfig
from worker.state import INBOX

TOPICS = ("/data/ContactChangeEvent", "/data/LeadChangeEvent")


@pytest.fixture
def salesforce() -> Iterator[SalesforceSandbox]:
    """A fresh simulator (free ports, 1 s keepalives) for one test."""
    sandbox = SalesforceSandbox(SandboxConfig(keepalive_seconds=1.0)).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


def credentials(sandbox: SalesforceSandbox) -> Credentials:
    return Credentials(
        instance_url=sandbox.instance_url,
        client_id=sandbox.config.client_id,
        client_secret=sandbox.config.client_secret,
    )


class Running:
    """A subscriber running in a thread; `stop()` ends it."""

    def __init__(self, subscriber: Subscriber, tokens: TokenSource, channel: grpc.Channel) -> None:
        self.subscriber = subscriber
        self.tokens = tokens
        self.channel = channel
        self.thread = threading.Thread(target=subscriber.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.subscriber.shutdown()
        self.thread.join(timeout=15)
        self.channel.close()
        assert not self.thread.is_alive()


@pytest.fixture
def subscriber(
    salesforce: SalesforceSandbox, redis_client: redis.Redis, redis_url: str
) -> Iterator[Callable[..., Running]]:
    """Factory: start a subscriber on the simulator, handing off into the test Redis."""
    from worker.celery_app import app
    from worker.handoff import Enqueuer

    app.conf.broker_url = redis_url
    running: list[Running] = []

    def start(**config: Any) -> Running:
        config.setdefault("topics", TOPICS)
        config.setdefault("backoff_initial", 0.1)
        config.setdefault("backoff_max", 0.5)
        config.setdefault("origin_filter", OriginFilter())
        tokens = TokenSource(credentials(salesforce), httpx.Client(timeout=5), 900)
        channel = grpc.insecure_channel(salesforce.pubsub_endpoint)
        sub = Subscriber(
            SubscriberConfig(**config),
            tokens,
            channel,
            Enqueuer(app, redis_client, redis_url),
            redis_client,
        )
        running.append(Running(sub, tokens, channel))
        return running[-1]

    yield start
    for r in running:
        if r.thread.is_alive():
            r.stop()


def inbox_events(client: redis.Redis) -> list[dict[str, Any]]:
    """Every event recorded in the inbox (what the hand-off acknowledged)."""
    return [json.loads(v) for v in client.hvals(INBOX)]
