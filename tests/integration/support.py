"""Helpers for end-to-end tests: sign like the CRMs do, build events, poll."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

API_KEY = "wbk_test_integration_key_0123456789"
HUBSPOT_SECRET = "hs-integration-secret"
PUBLIC_BASE = "https://sync.example.test"
PORTAL = 62515


def hubspot_v3_headers(body: bytes, path: str = "/webhooks/hubspot") -> dict[str, str]:
    """Sign like HubSpot does (v3), independently of the receiver's code."""
    ts = str(int(time.time() * 1000))
    message = f"POST{PUBLIC_BASE}{path}".encode() + body + ts.encode()
    digest = hmac.new(HUBSPOT_SECRET.encode(), message, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
        "X-HubSpot-Request-Timestamp": ts,
    }


_event_ids = iter(range(1, 10**9))


def hs_change(object_id: int, prop: str, value: str | None, occurred_ms: int) -> dict[str, Any]:
    """One HubSpot contact.propertyChange event."""
    return {
        "eventId": next(_event_ids),
        "subscriptionId": 2101,
        "portalId": PORTAL,
        "appId": 909090,
        "occurredAt": occurred_ms,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": object_id,
        "propertyName": prop,
        "propertyValue": value,
        "changeSource": "CRM_UI",
    }


def post_hubspot(receiver: Any, events: list[dict[str, Any]]) -> Any:
    body = json.dumps(events).encode()
    resp = receiver.post("/webhooks/hubspot", data=body, headers=hubspot_v3_headers(body))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp


def link(redis_url: str, source: str, object_id: str, contact: str, account: str = "") -> None:
    """Store a link the way `links import` does."""
    import redis

    from worker.state import State

    client = redis.Redis.from_url(redis_url)
    State(client).set_links([(source, account, object_id, contact)])
    client.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll until predicate() is truthy; fail with the last value after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


def now_ms() -> int:
    return int(time.time() * 1000)


@contextlib.contextmanager
def runtime_factory(
    redis_url: str, base_url: str, api_key: str = API_KEY
) -> Iterator[Callable[..., Any]]:
    """Builds pipeline Runtimes on the test Redis and a LeadLex simulator at `base_url`
    (Org limits, COALESCE_SECONDS=0, default mapping, nothing dispatched): `build(env={...},
    **runtime_fields)`; closes the LeadLex clients it made on exit."""
    import redis

    from worker import pipeline
    from worker.leadlex import LeadLexClient
    from worker.mapping import default_mapping
    from worker.settings import load_settings

    clients: list[LeadLexClient] = []

    def build(env: dict[str, str] | None = None, **fields: Any) -> pipeline.Runtime:
        settings = load_settings(
            {
                "REDIS_URL": redis_url,
                "LEADLEX_API_KEY": api_key,
                "LEADLEX_PLAN": "org",
                "LEADLEX_BASE_URL": base_url,
                "COALESCE_SECONDS": "0",
                **(env or {}),
            },
            env_file=None,
        )
        client = LeadLexClient(base_url, api_key, timeout=5)
        clients.append(client)
        return pipeline.Runtime(
            settings=settings,
            redis=redis.Redis.from_url(redis_url),
            mapping=default_mapping(),
            client_factory=lambda: client,
            **fields,
        )

    try:
        yield build
    finally:
        for client in clients:
            client.close()
