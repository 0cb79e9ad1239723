"""POST /webhooks/hubspot through Flask's test client with a real Redis behind it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from tests.receiver.conftest import close_app
from tests.receiver.senders import (
    HUBSPOT_PATH,
    PUBLIC_BASE_URL,
    dumps,
    hubspot_event,
    hubspot_v1_headers,
    hubspot_v3_headers,
    ingest_batches,
    make_settings,
    now_ms,
    payload,
)
from webhook_app import create_app
from webhook_app.sources.hubspot import parse_event
from worker.celery_app import QUEUE_INGEST
from worker.deadletter import DeadLetters
from worker.events import ChangeEvent, fingerprint
from worker.metrics import Metrics


def post(client: FlaskClient, body: bytes, headers: dict[str, str], path: str = HUBSPOT_PATH):
    return client.post(path, data=body, headers=headers)


def test_valid_batch_is_one_message_with_every_event(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """A signed batch of N contact events is answered 200 and enqueued as one message of N."""
    events = [hubspot_event(eventId=i, objectId=50_000 + i) for i in range(100)]
    body = dumps(events)
    started = time.perf_counter()
    response = post(client, body, hubspot_v3_headers(body))
    assert time.perf_counter() - started < 1.0  # "well inside 5 s" for 100 events
    assert response.status_code == 200
    assert response.json == {
        "status": "accepted",
        "accepted": 100,
        "dead_lettered": 0,
        "ignored": 0,
    }
    [batch] = ingest_batches(redis_client)
    assert len(batch) == 100
    headers = json.loads(redis_client.lindex(QUEUE_INGEST, 0))["headers"]
    assert headers["argsrepr"] == "[<100 hubspot event refs>]"  # no contact data in Flower
    first = ChangeEvent.from_dict(batch[0])
    assert first.source == "hubspot"
    assert first.account == "7070707"
    assert first.object_id == "50000"
    assert first.kind == "update"
    assert first.changes == {"jobtitle": "Head of Procurement"}
    assert first.occurred_at_ms == 1760000000123
    assert first.received_at_ms > 0
    assert first.fingerprint == fingerprint(
        "hubspot",
        "7070707",
        "contact",
        "update",
        "50000",
        1760000000123,
        "jobtitle",
        "Head of Procurement",
        "",
    )
    assert Metrics(redis_client).value("events_enqueued", source="hubspot") == 100
    assert Metrics(redis_client).value("webhooks_received", source="hubspot") == 1


def test_sample_batch_with_v1_only(redis_url: str, redis_client: redis.Redis) -> None:
    """The §1.7 sample, signed v1 only, maps all three events once v1 is opted into."""
    body = payload("hubspot", "sample-batch.json")
    app = create_app(make_settings(redis_url, HUBSPOT_SIGNATURE_VERSIONS="v3,v1"))
    try:
        response = post(app.test_client(), body, hubspot_v1_headers(body))
    finally:
        close_app(app)
    assert response.status_code == 200, response.json
    [batch] = ingest_batches(redis_client)
    kinds = [(e["kind"], e["object_id"], e["merged_ids"]) for e in batch]
    assert kinds == [
        ("update", "51001", []),
        ("create", "51002", []),
        ("merge", "51003", ["51004"]),
    ]


def test_every_subscription_type_maps_or_is_ignored(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """Each contact subscription type maps to its kind; other object types are counted, not sent."""
    body = payload("hubspot", "all-subscription-types.json")
    response = post(client, body, hubspot_v3_headers(body))
    assert response.json == {"status": "accepted", "accepted": 9, "dead_lettered": 0, "ignored": 3}
    [batch] = ingest_batches(redis_client)
    got = [(e["kind"], e["object_type"], e["object_id"], e["changes"]) for e in batch]
    assert got == [
        ("create", "contact", "61001", {}),
        ("update", "contact", "61001", {"email": "ana@example.org"}),
        ("delete", "contact", "61002", {}),
        ("privacy_delete", "contact", "61003", {}),
        ("merge", "contact", "61004", {}),
        ("restore", "contact", "61002", {}),
        ("association", "contact", "61001", {}),
        ("update", "contact", "61001", {"jobtitle": ""}),  # eventType accepted too
        ("update", "contact", "61007", {"firstname": "Ana"}),  # object.* with 0-1
    ]
    assert batch[4]["merged_ids"] == ["61005", "61006"]
    metrics = Metrics(redis_client)
    assert metrics.value("events_ignored", source="hubspot", kind="0-2") == 1
    assert metrics.value("events_ignored", source="hubspot", kind="company") == 1
    assert metrics.value("events_ignored", source="hubspot", kind="deal") == 1


def test_merge_into_a_new_record_targets_the_new_id() -> None:
    """When newObjectId differs from primaryObjectId the new record survives and both merge in."""
    raw = hubspot_event(
        subscriptionType="contact.merge",
        propertyName=None,
        propertyValue=None,
        objectId=1,
        primaryObjectId=1,
        mergedObjectIds=[2],
        newObjectId=3,
    )
    event = parse_event(raw, 0)
    assert isinstance(event, ChangeEvent)
    assert (event.object_id, event.merged_ids) == ("3", ("2", "1"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("x", "x"), (None, None), (5, "5"), (1.5, "1.5"), (True, "true")],
)
def test_property_values_are_text(value: Any, expected: str | None) -> None:
    """propertyValue is kept as text; null means cleared."""
    event = parse_event(hubspot_event(propertyValue=value) | {"propertyValue": value}, 0)
    assert isinstance(event, ChangeEvent)
    assert event.changes == {"jobtitle": expected}


def test_mixed_batch_dead_letters_the_bad_event(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """An invalid event in a good batch goes to the DLQ with its field; the others are enqueued."""
    bad = hubspot_event(eventId=2, occurredAt="yesterday")
    events = [
        hubspot_event(eventId=1),
        bad,
        hubspot_event(eventId=3, propertyValue="General Counsel"),
        "not an object",
    ]
    body = dumps(events)
    response = post(client, body, hubspot_v3_headers(body))
    assert response.status_code == 200
    assert response.json == {"status": "accepted", "accepted": 2, "dead_lettered": 2, "ignored": 0}
    [batch] = ingest_batches(redis_client)
    assert [e["event_id"] for e in batch] == ["1", "3"]
    letters = list(DeadLetters(redis_client).iter())
    assert [(d.reason, d.source, d.details["field"], d.details["index"]) for d in letters] == [
        ("invalid_event", "hubspot", "occurredAt", 1),
        ("invalid_event", "hubspot", "$", 3),
    ]
    assert letters[0].payload == bad
    assert "epoch milliseconds" in letters[0].details["problem"]
    assert Metrics(redis_client).value("events_invalid", source="hubspot") == 2


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (hubspot_event(propertyName=None), "propertyName"),
        (hubspot_event(portalId=None), "portalId"),
        (hubspot_event(objectId=[1]), "objectId"),
        (hubspot_event(subscriptionType="contact.explode"), "subscriptionType"),
        (hubspot_event(subscriptionType=None), "subscriptionType"),
        (hubspot_event(subscriptionType="object.creation"), "objectTypeId"),
        (hubspot_event(subscriptionType="contact.merge", mergedObjectIds="2"), "mergedObjectIds"),
        (hubspot_event(propertyValue={"a": 1}), "propertyValue"),
        (hubspot_event(occurredAt=True), "occurredAt"),
        (hubspot_event(eventId=-1), "eventId"),
    ],
)
def test_invalid_events_name_their_field(event: dict[str, Any], field: str) -> None:
    """Each malformed event is refused naming the field at fault."""
    from worker.batch import InvalidEvent

    with pytest.raises(InvalidEvent) as err:
        parse_event(event, 0)
    assert err.value.field == field


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b, h: (b.replace(b"Head", b"Tail"), h), id="tampered-body"),
        pytest.param(
            lambda b, h: (b, hubspot_v3_headers(b, secret="wrong-secret")), id="wrong-secret"
        ),
        pytest.param(
            lambda b, h: (b, hubspot_v3_headers(b, timestamp_ms=now_ms() - 360_000)),
            id="six-minutes-old",
        ),
        pytest.param(
            lambda b, h: (b, hubspot_v3_headers(b, timestamp_ms=now_ms() + 360_000)),
            id="six-minutes-ahead",
        ),
        pytest.param(
            lambda b, h: (b, hubspot_v3_headers(b, base="https://elsewhere.example")),
            id="other-url",
        ),
        pytest.param(lambda b, h: (b, {"Content-Type": "application/json"}), id="no-signature"),
    ],
)
def test_bad_signatures_are_401_json(
    client: FlaskClient, redis_client: redis.Redis, mutate: Any
) -> None:
    """Tampered, wrongly keyed, stale, future or missing signatures get 401 and nothing queued."""
    body = dumps([hubspot_event()])
    body, headers = mutate(body, hubspot_v3_headers(body))
    response = post(client, body, headers)
    assert response.status_code == 401
    error = response.json["error"]
    assert set(error) >= {"code", "message"}
    assert headers.get("X-HubSpot-Signature-v3", "@@") not in response.get_data(as_text=True)
    assert ingest_batches(redis_client) == []
    assert Metrics(redis_client).value("webhooks_rejected", source="hubspot", reason=error["code"])


def test_signed_query_string_is_decoded_like_hubspot(client: FlaskClient) -> None:
    """The raw query is signed after HubSpot's decoding table (a %3A in the query)."""
    body = dumps([hubspot_event()])
    path = HUBSPOT_PATH + "?portal=62515&ref=a%3Ab%20c"
    response = post(client, body, hubspot_v3_headers(body, path=path), path=path)
    assert response.status_code == 200, response.json


def test_v2_signature_over_the_public_url(redis_url: str) -> None:
    """A v2 signature covers PUBLIC_BASE_URL + raw path; versions outside the setting are 401."""
    from webhook_app.signatures import hubspot_v2

    app = create_app(make_settings(redis_url, HUBSPOT_SIGNATURE_VERSIONS="v3,v2"))
    try:
        client = app.test_client()
        body = dumps([hubspot_event()])
        signature = hubspot_v2(
            "demo-client-secret-0000", "POST", PUBLIC_BASE_URL + HUBSPOT_PATH, body
        )
        headers = {
            "Content-Type": "application/json",
            "X-HubSpot-Signature": signature,
            "X-HubSpot-Signature-Version": "v2",
        }
        assert post(client, body, headers).status_code == 200
        v1 = post(client, body, hubspot_v1_headers(body))
        assert v1.status_code == 401
        assert v1.json["error"]["code"] == "signature_version_not_allowed"
    finally:
        close_app(app)


def test_portal_allow_list(redis_url: str, redis_client: redis.Redis) -> None:
    """With HUBSPOT_PORTAL_IDS set, a batch from another portal is refused with 403."""
    app = create_app(make_settings(redis_url, HUBSPOT_PORTAL_IDS="7070707,1"))
    try:
        client = app.test_client()
        good = dumps([hubspot_event()])
        assert post(client, good, hubspot_v3_headers(good)).status_code == 200
        bad = dumps([hubspot_event(), hubspot_event(portalId=999)])
        response = post(client, bad, hubspot_v3_headers(bad))
        assert response.status_code == 403
        assert response.json["error"]["code"] == "unknown_portal"
        assert response.json["error"]["details"]["portal_ids"] == ["999"]
        assert len(ingest_batches(redis_client)) == 1
    finally:
        close_app(app)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe[]", "malformed_json"),
        (b"[NaN]", "malformed_json"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),
        (b'{"eventId": 1}', "invalid_body"),
        (b"[]", "invalid_batch_size"),
        (dumps([hubspot_event()] * 101), "invalid_batch_size"),
    ],
)
def test_malformed_bodies_are_400(client: FlaskClient, body: bytes, code: str) -> None:
    """A signed body that is not a JSON array of 1..100 events is a 400 naming the problem."""
    response = post(client, body, hubspot_v3_headers(body))
    assert response.status_code == 400
    assert response.json["error"]["code"] == code
    assert response.json["error"]["details"]["field"] == "$"


def test_log_line_has_the_canonical_fields(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """One log line per request carries source, account, counts, latency, outcome and status."""
    body = dumps([hubspot_event(), hubspot_event(eventId=9, occurredAt=None)])
    headers = hubspot_v3_headers(body)
    with caplog.at_level("INFO", logger="leadlex_sync.receiver"):
        post(client, body, headers)
    [record] = [r for r in caplog.records if r.name == "leadlex_sync.receiver"]
    fields = {
        k: getattr(record, k)
        for k in ("source", "account", "accepted", "dead_lettered", "ignored", "outcome", "status")
    }
    assert fields == {
        "source": "hubspot",
        "account": "7070707",
        "accepted": 1,
        "dead_lettered": 1,
        "ignored": 0,
        "outcome": "accepted",
        "status": 200,
    }
    assert isinstance(record.latency_ms, float)
    text = record.getMessage() + json.dumps(record.__dict__, default=str)
    assert headers["X-HubSpot-Signature-v3"] not in text
    assert "demo-client-secret-0000" not in text
    assert "Head of Procurement" not in text
