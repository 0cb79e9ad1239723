"""Health, readiness and metrics endpoints, and the 503 answer when Redis is gone."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.receiver.conftest import close_app
from tests.receiver.senders import (
    dumps,
    generic_headers,
    hubspot_event,
    hubspot_v3_headers,
    make_settings,
    payload,
)
from webhook_app import create_app
from webhook_app.health import Check, add_readiness_check
from worker.embedded_redis import RedisServer


def test_healthz(client: FlaskClient) -> None:
    """/healthz answers 200 ok."""
    response = client.get("/healthz")
    assert (response.status_code, response.json) == (200, {"status": "ok"})


def test_readyz_lists_checks_and_accepts_more(app: Flask, client: FlaskClient) -> None:
    """/readyz is 200 with each check listed; a registered failing check makes it 503."""
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"]["redis"]["ok"] is True
    settings_check = response.json["checks"]["settings"]
    assert settings_check["ok"] is True
    assert settings_check["detail"].startswith("sources: hubspot, salesforce, generic")
    # The test settings accept unauthenticated Salesforce messages: /readyz says so.
    assert "UNAUTHENTICATED" in settings_check["detail"]
    add_readiness_check(app, lambda: Check("circuit", False, "LeadLex circuit open"))

    def broken() -> Check:
        raise RuntimeError("boom")

    add_readiness_check(app, broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["status"] == "not_ready"
    assert response.json["checks"]["circuit"] == {"ok": False, "detail": "LeadLex circuit open"}
    assert response.json["checks"]["broken"] == {"ok": False, "detail": "RuntimeError"}


def test_readyz_without_any_source_is_503(redis_url: str) -> None:
    """A receiver with no source configured is not ready."""
    app = create_app(
        make_settings(
            redis_url, HUBSPOT_CLIENT_SECRET="", SALESFORCE_ORG_IDS="", GENERIC_WEBHOOK_SECRET=""
        )
    )
    try:
        response = app.test_client().get("/readyz")
    finally:
        close_app(app)
    assert response.status_code == 503
    assert response.json["checks"]["settings"]["ok"] is False


def test_metrics_exports_receiver_counters(client: FlaskClient) -> None:
    """/metrics is Prometheus text with the receiver's counters."""
    body = dumps([hubspot_event()])
    client.post("/webhooks/hubspot", data=body, headers=hubspot_v3_headers(body))
    client.post("/webhooks/hubspot", data=body, headers={"Content-Type": "application/json"})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.get_data(as_text=True)
    assert 'leadlex_sync_webhooks_received_total{source="hubspot"} 2.0' in text
    assert 'leadlex_sync_events_enqueued_total{source="hubspot"} 1.0' in text
    assert (
        'leadlex_sync_webhooks_rejected_total{reason="signature_missing",source="hubspot"} 1.0'
        in text
    )


@pytest.fixture
def stoppable_redis() -> Iterator[RedisServer]:
    """A private redis-server on a spare port that the test may stop."""
    server = RedisServer(appendonly=False).start()
    yield server
    server.cleanup()


def test_redis_down_is_503_with_retry_after_fast(stoppable_redis: RedisServer) -> None:
    """With Redis stopped every source answers 503 + Retry-After within 5 s; /healthz stays up."""
    app = create_app(make_settings(stoppable_redis.url))
    client = app.test_client()
    try:
        hub = dumps([hubspot_event()])
        assert (
            client.post("/webhooks/hubspot", data=hub, headers=hubspot_v3_headers(hub)).status_code
            == 200
        )
        stoppable_redis.stop()

        started = time.perf_counter()
        response = client.post("/webhooks/hubspot", data=hub, headers=hubspot_v3_headers(hub))
        assert time.perf_counter() - started < 5
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "30"
        assert response.json["error"]["code"] == "broker_unavailable"

        started = time.perf_counter()
        soap = client.post(
            "/webhooks/salesforce",
            data=payload("salesforce", "two-contacts.xml"),
            content_type="text/xml",
        )
        assert time.perf_counter() - started < 5
        assert soap.status_code == 503
        assert soap.headers["Retry-After"] == "30"
        assert b"<faultcode>soapenv:Server</faultcode>" in soap.data

        body = payload("generic", "single.json")
        generic = client.post("/webhooks/generic", data=body, headers=generic_headers(body))
        assert generic.status_code == 503

        # A batch with only invalid events (nothing for the broker) still needs the DLQ.
        bad = dumps([hubspot_event(occurredAt=None)])
        dlq_only = client.post("/webhooks/hubspot", data=bad, headers=hubspot_v3_headers(bad))
        assert dlq_only.status_code == 503

        assert client.get("/readyz").status_code == 503
        assert client.get("/readyz").json["checks"]["redis"]["ok"] is False
        assert client.get("/metrics").status_code == 503
        assert client.get("/healthz").status_code == 200
    finally:
        close_app(app)
