"""The WSGI fast path (webhook_app.fastpath) answers every webhook POST exactly as the Flask
views do: same status line, headers and body, for good and bad input, and hands everything
else to Flask."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from tests.receiver.conftest import close_app
from tests.receiver.senders import (
    dumps,
    generic_headers,
    hubspot_event,
    hubspot_v3_headers,
    ingest_refs,
    make_settings,
    payload,
)
from webhook_app import create_app
from webhook_app.fastpath import WebhookFastPath
from webhook_app.sources import hubspot
from worker.embedded_redis import free_port

XML = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
Request = tuple[str, str, bytes, dict[str, str]]  # method, path, body, headers


def _hubspot(body: bytes, **header_overrides: str) -> Request:
    return ("POST", "/webhooks/hubspot", body, {**hubspot_v3_headers(body), **header_overrides})


def _generic(message: dict[str, Any], msg_id: str = "msg_fast_1") -> Request:
    body = dumps(message)
    return ("POST", "/webhooks/generic", body, generic_headers(body, msg_id=msg_id))


def _cases() -> dict[str, Request]:
    good = dumps([hubspot_event()])
    bad_event = dumps([hubspot_event(eventId=2), hubspot_event(eventId=3, occurredAt="soon")])
    generic = json.loads(payload("generic", "single.json"))
    return {
        "hubspot accepted": _hubspot(good),
        "hubspot with a dead-lettered event": _hubspot(bad_event),
        "hubspot company event ignored": _hubspot(
            dumps([hubspot_event(subscriptionType="company.propertyChange")])
        ),
        "hubspot bad signature": _hubspot(good, **{"X-HubSpot-Signature-v3": "AAAA"}),
        "hubspot stale timestamp": (
            "POST",
            "/webhooks/hubspot",
            good,
            hubspot_v3_headers(good, timestamp_ms=1_000_000_000_000),
        ),
        "hubspot not JSON": _hubspot(b"[{not json"),
        "hubspot empty batch": _hubspot(b"[]"),
        "hubspot object body": _hubspot(b'{"a": 1}'),
        "hubspot wrong media type": _hubspot(good, **{"Content-Type": "text/plain"}),
        "hubspot too large (declared)": _hubspot(good, **{"Content-Length": "99999999"}),
        "generic accepted": _generic(generic),
        "generic bad field": _generic({**generic, "occurred_at": "yesterday"}, "msg_fast_2"),
        "salesforce ack": (
            "POST",
            "/webhooks/salesforce",
            payload("salesforce", "two-contacts.xml"),
            XML,
        ),
        "salesforce fault": ("POST", "/webhooks/salesforce", b"<not-soap/>", XML),
        "salesforce wrong media type": (
            "POST",
            "/webhooks/salesforce",
            payload("salesforce", "two-contacts.xml"),
            {"Content-Type": "application/json"},
        ),
        # Not the fast path's: Flask answers these (405 with Allow, 404, redirect...).
        "GET a webhook route": ("GET", "/webhooks/hubspot", b"", {}),
        "trailing slash": ("POST", "/webhooks/hubspot/", good, hubspot_v3_headers(good)),
        "unknown path": ("POST", "/webhooks/other", good, {"Content-Type": "application/json"}),
    }


def _call(wsgi: Any, request: Request) -> tuple[str, list[tuple[str, str]], bytes]:
    method, path, body, headers = request
    environ = EnvironBuilder(
        path=path, method=method, data=body, headers=headers, base_url="https://hooks.example.net"
    ).get_environ()
    if "Content-Length" in headers:  # a declared length the body does not have
        environ["CONTENT_LENGTH"] = headers["Content-Length"]
    app_iter, status, response_headers = run_wsgi_app(wsgi, environ, buffered=True)
    return status, list(response_headers), b"".join(app_iter)


@pytest.fixture
def fast_app(app: Flask) -> WebhookFastPath:
    """The app's WSGI entry, which create_app made the fast path."""
    assert isinstance(app.wsgi_app, WebhookFastPath)
    return app.wsgi_app


@pytest.mark.parametrize("case", list(_cases()))
def test_fast_path_answers_as_flask(case: str, fast_app: WebhookFastPath) -> None:
    """Each request gets the same status line, headers and body from both ways in."""
    request = _cases()[case]
    fast = _call(fast_app, request)
    flask = _call(fast_app.flask_wsgi, request)
    assert fast == flask
    assert fast[0][:3] != "500"


def test_fast_path_takes_webhook_posts_without_the_views(
    app: Flask, fast_app: WebhookFastPath, redis_client: redis.Redis
) -> None:
    """With the Flask view broken, a webhook POST is still accepted and enqueued (the fast
    path answered it), while Flask still serves the other routes."""

    def broken() -> None:
        raise AssertionError("the Flask view must not run")

    app.view_functions["hubspot.hubspot_webhook"] = broken
    status, headers, body = _call(fast_app, _hubspot(dumps([hubspot_event(eventId=77)])))
    assert status == "200 OK"
    assert ("Content-Type", "application/json") in headers
    assert json.loads(body) == {
        "status": "accepted",
        "accepted": 1,
        "dead_lettered": 0,
        "ignored": 0,
    }
    assert len(ingest_refs(redis_client)) == 1
    assert _call(fast_app, ("GET", "/healthz", b"", {}))[0] == "200 OK"


def test_unexpected_error_answers_alike(
    fast_app: WebhookFastPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parser bug is the same 503 internal_error with Retry-After on both ways in."""

    def explode(*args: object) -> object:
        raise ZeroDivisionError("boom")

    fields = {f: getattr(hubspot.SOURCE, f) for f in hubspot.SOURCE.__dataclass_fields__}
    monkeypatch.setattr(hubspot, "SOURCE", hubspot.SOURCE.__class__(**{**fields, "parse": explode}))
    request = _hubspot(dumps([hubspot_event()]))
    fast, flask = _call(fast_app, request), _call(fast_app.flask_wsgi, request)
    assert fast == flask
    assert fast[0] == "503 SERVICE UNAVAILABLE"
    assert ("Retry-After", "30") in fast[1]
    assert json.loads(fast[2])["error"]["code"] == "internal_error"


@pytest.fixture
def app_without_redis() -> Iterator[Flask]:
    """A receiver whose Redis URL points at a loopback port nothing listens on."""
    app = create_app(make_settings(f"redis://127.0.0.1:{free_port()}/0"))
    yield app
    close_app(app)


def test_redis_down_answers_alike(app_without_redis: Flask) -> None:
    """With Redis unreachable both ways in answer the same 503 broker_unavailable."""
    fast_app = app_without_redis.wsgi_app
    assert isinstance(fast_app, WebhookFastPath)
    for request in (_hubspot(dumps([hubspot_event()])), _generic({"account": "a"})):
        fast, flask = _call(fast_app, request), _call(fast_app.flask_wsgi, request)
        assert fast == flask
    fast = _call(fast_app, _hubspot(dumps([hubspot_event()])))
    assert fast[0] == "503 SERVICE UNAVAILABLE"
    assert ("Retry-After", "30") in fast[1]
    assert json.loads(fast[2])["error"]["code"] == "broker_unavailable"
