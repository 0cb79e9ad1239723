"""Fixtures: the HubSpot simulator on loopback (reset per test) and a journal poll runtime
on the test Redis with the real hand-off step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from hubspot_sandbox import HubSpotSandboxConfig, HubSpotSandboxServer
from pull_sources.hubspot_journal.api import JournalClient
from pull_sources.hubspot_journal.poller import PollRuntime
from pull_sources.hubspot_journal.position import Position
from worker.celery_app import app as celery_app
from worker.handoff import Enqueuer
from worker.metrics import Metrics

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret-0000"
PORTAL = 62515


class HubSpot:
    """Test-side handle on the simulator: record changes, move the clock, set knobs."""

    def __init__(self, server: HubSpotSandboxServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=30)

    @property
    def url(self) -> str:
        return self.server.url

    def record(self, *changes: dict[str, Any]) -> dict[str, Any]:
        resp = self.http.post("/_hubspot/changes", json={"changes": list(changes)})
        resp.raise_for_status()
        return dict(resp.json())

    def configure(self, **knobs: Any) -> None:
        self.http.post("/_hubspot/config", json=knobs).raise_for_status()

    def advance(self, seconds: float) -> dict[str, Any]:
        resp = self.http.post("/_hubspot/clock", json={"advance": seconds})
        resp.raise_for_status()
        return dict(resp.json())

    def set_offset(self, seconds: float) -> None:
        self.http.post(
            "/_hubspot/clock", json={"offset": seconds, "deliver": False}
        ).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(self.http.get("/_hubspot/stats").json())


@pytest.fixture(scope="session")
def hubspot_server() -> Iterator[HubSpotSandboxServer]:
    """One simulator for the session."""
    server = HubSpotSandboxServer(
        HubSpotSandboxConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, portal_id=PORTAL)
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hubspot(hubspot_server: HubSpotSandboxServer) -> Iterator[HubSpot]:
    """The simulator, reset (config, clock, journal, subscriptions)."""
    hs = HubSpot(hubspot_server)
    hs.http.post("/_hubspot/reset").raise_for_status()
    yield hs
    hs.http.close()


def subscribe_all(client: JournalClient, properties: list[str] | None = None) -> None:
    """Journal subscriptions for every contact action (and privacy deletion)."""
    client.upsert_subscription(
        {
            "subscriptionType": "OBJECT",
            "objectTypeId": "0-1",
            "actions": ["CREATE", "UPDATE", "DELETE", "MERGE", "RESTORE"],
            "properties": properties or [],
            "objectIds": [],
        }
    )
    client.upsert_subscription(
        {
            "subscriptionType": "GDPR_PRIVACY_DELETION",
            "objectTypeId": "0-1",
            "actions": ["GDPR_DELETE"],
            "properties": [],
            "objectIds": [],
        }
    )


@pytest.fixture
def journal_client(hubspot: HubSpot) -> Iterator[JournalClient]:
    """A journal client on the simulator with the right credentials."""
    http = httpx.Client(timeout=10)
    yield JournalClient(http, hubspot.url, CLIENT_ID, CLIENT_SECRET)
    http.close()


@pytest.fixture
def poll_runtime(
    journal_client: JournalClient, redis_client: redis.Redis, redis_url: str
) -> PollRuntime:
    """A poll runtime: the simulator, the test Redis, the real Enqueuer; subscribed."""
    subscribe_all(journal_client)
    return PollRuntime(
        client=journal_client,
        position=Position(redis_client, "global"),
        enqueuer=Enqueuer(celery_app, redis_client, redis_url),
        metrics=Metrics(redis_client),
        start="earliest",
        batch_size=10,
        lease_seconds=30,
    )
