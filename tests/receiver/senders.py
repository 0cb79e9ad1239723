"""Build requests the way each sender does (signed headers), and read what was enqueued."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import redis

from webhook_app.signatures import (
    hubspot_v1,
    hubspot_v3,
    hubspot_v3_uri,
    standard_webhooks_signature,
    whsec_key,
)
from worker.celery_app import QUEUE_INGEST
from worker.handoff import load_events
from worker.settings import Settings, load_settings

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads"

HUBSPOT_SECRET = "demo-client-secret-0000"
PUBLIC_BASE_URL = "https://hooks.example.net"
HUBSPOT_PATH = "/webhooks/hubspot"
ORG_18 = "00D5g000004XmPqEAK"
ORG_15 = "00D5g000004XmPq"
SALESFORCE_TOKEN = "sf-Qm3vT8xK2pLw9ZrB4nYc7HdJ6sFa1Ge5"
GENERIC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
GENERIC_SECRET_OLD = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"


def make_settings(redis_url: str, **overrides: str) -> Settings:
    """Receiver settings for tests: every source configured, overridable by env name."""
    env = {
        "REDIS_URL": redis_url,
        "HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "SALESFORCE_ORG_IDS": ORG_15,
        # Most receiver tests post Salesforce messages without ?token=; the token's own
        # tests (and tests/security/) set SALESFORCE_TOKEN instead.
        "SALESFORCE_ALLOW_UNAUTHENTICATED": "true",
        "GENERIC_WEBHOOK_SECRET": GENERIC_SECRET,
        **overrides,
    }
    return load_settings({k: v for k, v in env.items() if v}, require_leadlex=False, env_file=None)


def payload(*parts: str) -> bytes:
    return PAYLOADS.joinpath(*parts).read_bytes()


def now_ms() -> int:
    return int(time.time() * 1000)


def hubspot_v3_headers(
    body: bytes,
    *,
    path: str = HUBSPOT_PATH,
    timestamp_ms: int | None = None,
    secret: str = HUBSPOT_SECRET,
    base: str = PUBLIC_BASE_URL,
) -> dict[str, str]:
    """Headers HubSpot sends with a v3 signature (plus the legacy v1 pair, as HubSpot does)."""
    stamp = str(now_ms() if timestamp_ms is None else timestamp_ms)
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": hubspot_v3(
            secret, "POST", hubspot_v3_uri(base + path), body, stamp
        ),
        "X-HubSpot-Request-Timestamp": stamp,
        "X-HubSpot-Signature": hubspot_v1(secret, body),
        "X-HubSpot-Signature-Version": "v1",
    }


def hubspot_v1_headers(body: bytes, *, secret: str = HUBSPOT_SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature": hubspot_v1(secret, body),
        "X-HubSpot-Signature-Version": "v1",
    }


def generic_headers(
    body: bytes,
    *,
    msg_id: str = "msg_test_1",
    timestamp: int | None = None,
    secret: str = GENERIC_SECRET,
) -> dict[str, str]:
    """Standard Webhooks headers for `body`."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": standard_webhooks_signature(whsec_key(secret), msg_id, stamp, body),
    }


def hubspot_event(**fields: Any) -> dict[str, Any]:
    """One valid contact.propertyChange event, fields overridable."""
    event: dict[str, Any] = {
        "eventId": 1,
        "subscriptionId": 2101,
        "portalId": 7070707,
        "appId": 909090,
        "occurredAt": 1760000000123,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": 51001,
        "propertyName": "jobtitle",
        "propertyValue": "Head of Procurement",
        "changeSource": "CRM_UI",
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def ingest_refs(client: redis.Redis) -> list[list[Any]]:
    """The argument of every `leadlex_sync.ingest_batch` message on the `ingest` queue."""
    batches = []
    for raw in reversed(client.lrange(QUEUE_INGEST, 0, -1)):  # LPUSH: newest first
        message = json.loads(raw)
        assert message["headers"]["task"] == "leadlex_sync.ingest_batch"
        args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        assert kwargs == {}
        batches.append(args[0])
    return batches


def ingest_batches(client: redis.Redis) -> list[list[dict[str, Any]]]:
    """The event lists of every ingest message, read as the worker does (refs -> inbox)."""
    batches = []
    for refs in ingest_refs(client):
        assert all(isinstance(ref, str) for ref in refs), "ingest messages carry refs only"
        events = load_events(client, refs)
        assert None not in events, "every ref names an inbox record"
        batches.append([e for e in events if e is not None])
    return batches
