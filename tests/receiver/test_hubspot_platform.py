"""Conformance with HubSpot's 2026 developer-platform webhooks (reference crm-sources-2026.md §1):
generic `object.*` events with objectTypeId `0-1`, `sourceId`, `isSensitive`, `changeFlag`,
batches of up to 100, both signatures (v3 and v1) on every request."""

from __future__ import annotations

import redis
from flask.testing import FlaskClient

from tests.receiver.senders import (
    HUBSPOT_PATH,
    dumps,
    hubspot_v3_headers,
    ingest_batches,
    payload,
)
from worker.events import ChangeEvent
from worker.metrics import Metrics


def post(client: FlaskClient, body: bytes):
    headers = hubspot_v3_headers(body)
    # HubSpot sends both: v3 with its timestamp and the legacy v1 pair.
    assert {"X-HubSpot-Signature-v3", "X-HubSpot-Signature"} <= set(headers)
    return client.post(HUBSPOT_PATH, data=body, headers=headers)


def platform_event(i: int, **fields: object) -> dict[str, object]:
    event: dict[str, object] = {
        "eventId": 9000 + i,
        "subscriptionId": 4100,
        "portalId": 7070707,
        "appId": 909090,
        "occurredAt": 1781000000000 + i,
        "subscriptionType": "object.propertyChange",
        "attemptNumber": 0,
        "objectId": 72000 + i,
        "objectTypeId": "0-1",
        "propertyName": "lastname",
        "propertyValue": f"Name {i}",
        "changeSource": "CRM_UI",
        "sourceId": "userId:45678",
        "isSensitive": False,
    }
    event.update(fields)
    return event


def test_generic_object_events_map_to_contact_changes(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """Every generic object.* type for 0-1 (and privacyDeletion) maps; company (0-2) is ignored."""
    response = post(client, payload("hubspot", "platform-2026-generic.json"))
    assert response.status_code == 200, response.json
    assert response.json == {"status": "accepted", "accepted": 8, "dead_lettered": 0, "ignored": 1}
    [batch] = ingest_batches(redis_client)
    events = [ChangeEvent.from_dict(e) for e in batch]
    assert [(e.kind, e.object_id, e.object_type) for e in events] == [
        ("create", "71001", "contact"),
        ("update", "71001", "contact"),
        ("update", "71001", "contact"),
        ("merge", "71002", "contact"),
        ("delete", "71004", "contact"),
        ("privacy_delete", "71004", "contact"),
        ("restore", "71005", "contact"),
        ("association", "71001", "contact"),
    ]
    assert events[1].changes == {"email": "ines@example.org"}
    # A sensitive property is a value like any other (it is not logged by the receiver).
    assert events[2].changes == {"phone": "+44 20 7946 0018"}
    assert events[3].merged_ids == ("71003",)
    assert all(e.account == "7070707" for e in events)
    assert len({e.fingerprint for e in events}) == 8
    assert Metrics(redis_client).value("events_ignored", source="hubspot", kind="0-2") == 1


def test_full_batch_of_100_generic_events_is_one_message(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """A batch of 100 object.propertyChange events (the platform's maximum) is taken whole."""
    body = dumps([platform_event(i) for i in range(100)])
    response = post(client, body)
    assert response.status_code == 200
    assert response.json["accepted"] == 100
    [batch] = ingest_batches(redis_client)
    assert [e["object_id"] for e in batch] == [str(72000 + i) for i in range(100)]


def test_batch_over_100_is_refused_naming_the_limit(client: FlaskClient) -> None:
    """101 events is not a HubSpot batch: 400 invalid_batch_size, nothing enqueued."""
    response = post(client, dumps([platform_event(i) for i in range(101)]))
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_batch_size"


def test_retry_with_new_attempt_and_event_id_keeps_the_fingerprint(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """A redelivery (attemptNumber 1, even with a different eventId) dedupes to the first."""
    first = platform_event(1)
    again = platform_event(1, attemptNumber=1, eventId=123456, subscriptionId=4999)
    assert post(client, dumps([first])).status_code == 200
    assert post(client, dumps([again])).status_code == 200
    one, two = ingest_batches(redis_client)
    assert one[0]["fingerprint"] == two[0]["fingerprint"]


def test_other_value_or_time_is_a_different_change(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """Same record and property but another value or occurredAt gets its own fingerprint."""
    events = [
        platform_event(1),
        platform_event(1, propertyValue="Other"),
        platform_event(1, occurredAt=1781000009999),
    ]
    assert post(client, dumps(events)).status_code == 200
    [batch] = ingest_batches(redis_client)
    assert len({e["fingerprint"] for e in batch}) == 3


def test_missing_object_type_id_on_generic_event_is_dead_lettered(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """An object.* event without objectTypeId is refused alone, naming the field."""
    bad = platform_event(2)
    del bad["objectTypeId"]
    response = post(client, dumps([platform_event(1), bad]))
    assert response.status_code == 200
    assert response.json["accepted"] == 1
    assert response.json["dead_lettered"] == 1
    assert Metrics(redis_client).value("events_invalid", source="hubspot") == 1
