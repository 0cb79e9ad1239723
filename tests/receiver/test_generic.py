"""POST /webhooks/generic: Standard Webhooks signed JSON changes, and the schema kept in sync."""

from __future__ import annotations

import json
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from tests.receiver.conftest import close_app
from tests.receiver.senders import (
    GENERIC_SECRET,
    GENERIC_SECRET_OLD,
    dumps,
    generic_headers,
    ingest_batches,
    make_settings,
    payload,
)
from webhook_app import create_app
from webhook_app.sources import generic
from webhook_app.sources.generic import GenericBatch, GenericChange
from worker.events import KINDS, ChangeEvent, fingerprint

PATH = "/webhooks/generic"
SCHEMA = Path(generic.__file__).resolve().parent.parent / "schemas" / "generic-change.schema.json"


def post(client: FlaskClient, body: bytes, **kw: Any):
    return client.post(PATH, data=body, headers=generic_headers(body, **kw))


def test_single_change(client: FlaskClient, redis_client: redis.Redis) -> None:
    """One signed change is accepted and enqueued with its fields, time and fingerprint."""
    response = post(client, payload("generic", "single.json"), msg_id="msg_one")
    assert response.status_code == 200
    assert response.json == {"status": "accepted", "accepted": 1, "dead_lettered": 0, "ignored": 0}
    [[raw]] = ingest_batches(redis_client)
    event = ChangeEvent.from_dict(raw)
    assert (event.source, event.account, event.object_type, event.kind) == (
        "generic",
        "acme",
        "contact",
        "update",
    )
    assert event.object_id == "0035g00000XyZ12AAB"
    assert event.occurred_at_ms == 1760000100000
    assert event.changes == {"FirstName": "Mara", "Email": "mara.quist@example.org", "Phone": None}
    assert event.fingerprint == fingerprint("generic", "msg_one", 0)
    assert event.event_id == "msg_one:0"


def test_many_changes(client: FlaskClient, redis_client: redis.Redis) -> None:
    """`{"changes": [...]}` is one message of every change, defaults applied."""
    response = post(client, payload("generic", "many.json"), msg_id="msg_many")
    assert response.status_code == 200
    [batch] = ingest_batches(redis_client)
    assert [(e["object_type"], e["kind"], e["merged_ids"]) for e in batch] == [
        ("contact", "update", []),
        ("lead", "create", []),
        ("contact", "merge", ["0035g00000XyZ56AAF"]),
    ]
    assert batch[2]["occurred_at_ms"] == 1760000103000  # +02:00 offset honoured
    assert [e["fingerprint"] for e in batch] == [
        fingerprint("generic", "msg_many", i) for i in range(3)
    ]


def test_rotated_secret_accepts_both_keys(redis_url: str, redis_client: redis.Redis) -> None:
    """With two secrets configured, requests signed with either are accepted; others are not."""
    app = create_app(
        make_settings(redis_url, GENERIC_WEBHOOK_SECRET=f"{GENERIC_SECRET} {GENERIC_SECRET_OLD}")
    )
    try:
        client = app.test_client()
        body = payload("generic", "single.json")
        assert post(client, body, secret=GENERIC_SECRET).status_code == 200
        assert post(client, body, secret=GENERIC_SECRET_OLD).status_code == 200
        other = post(client, body, secret="whsec_" + "QUFB" * 8)
        assert other.status_code == 401
        assert other.json["error"]["code"] == "signature_mismatch"
    finally:
        close_app(app)
    assert len(ingest_batches(redis_client)) == 2


@pytest.mark.parametrize(
    ("offset", "code"), [(-360, "timestamp_out_of_window"), (360, "timestamp_out_of_window")]
)
def test_stale_or_future_timestamp_is_401(client: FlaskClient, offset: int, code: str) -> None:
    """A webhook-timestamp 6 minutes off either way is refused."""
    response = post(client, payload("generic", "single.json"), timestamp=int(time.time()) + offset)
    assert response.status_code == 401
    assert response.json["error"]["code"] == code


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "changes": [{"object_id": "a", "occurred_at": 1760000000000}] * 2
                + [{"occurred_at": 1760000000000}]
            },
            "changes[2].object_id",
        ),
        ({"object_id": "a"}, "occurred_at"),
        ({"object_id": "a", "occurred_at": 1760000000}, "occurred_at"),
        ({"object_id": "a", "occurred_at": "2025-10-09T08:55:00"}, "occurred_at"),
        ({"object_id": "a", "occurred_at": "2025-10-09"}, "occurred_at"),
        ({"object_id": "a", "occurred_at": True}, "occurred_at"),
        ({"object_id": 5, "occurred_at": 1760000000000}, "object_id"),
        ({"object_id": "a", "occurred_at": 1760000000000, "kind": "upsert"}, "kind"),
        ({"object_id": "a", "occurred_at": 1760000000000, "object_type": "deal"}, "object_type"),
        ({"object_id": "a", "occurred_at": 1760000000000, "changes": {"x": 1}}, "changes.x"),
        ({"object_id": "a", "occurred_at": 1760000000000, "kind": "merge"}, "merged_ids"),
        ({"object_id": "a", "occurred_at": 1760000000000, "merged_ids": ["b"]}, "merged_ids"),
        ({"object_id": "a", "occurred_at": 1760000000000, "extra": 1}, "extra"),
        ({"changes": []}, "changes"),
        ([], "$"),
    ],
)
def test_invalid_body_is_400_naming_the_field(
    client: FlaskClient, redis_client: redis.Redis, body: Any, field: str
) -> None:
    """A body that breaks the schema is refused whole with 400 naming the first bad field."""
    response = post(client, dumps(body))
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "invalid_body"
    assert error["details"]["field"] == field
    if field != "$":
        assert error["message"].startswith(f"{field}: ")
    assert ingest_batches(redis_client) == []


def test_schema_file_matches_the_pydantic_models() -> None:
    """The published JSON Schema has the models' fields, required set, enums, defaults, limits."""
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    change = schema["$defs"]["change"]
    props = change["properties"]
    fields = GenericChange.model_fields
    assert set(props) == set(fields)
    assert set(change["required"]) == {n for n, f in fields.items() if f.is_required()}
    assert change["additionalProperties"] is False
    assert GenericChange.model_config.get("extra") == "forbid"
    assert props["kind"]["enum"] == list(KINDS)
    assert tuple(props["object_type"]["enum"]) == typing.get_args(fields["object_type"].annotation)
    for name, field in fields.items():
        if not field.is_required():
            assert props[name]["default"] == field.get_default(call_default_factory=True), name
    occurred = {tuple(sorted(o)): o for o in props["occurred_at"]["oneOf"]}
    integer = next(o for o in occurred.values() if o.get("type") == "integer")
    assert (integer["minimum"], integer["maximum"]) == (generic.MIN_EPOCH_MS, generic.MAX_EPOCH_MS)
    assert props["merged_ids"]["maxItems"] == generic.MAX_CHANGES
    batch = schema["$defs"]["batch"]
    assert batch["required"] == ["changes"]
    assert set(batch["properties"]) == set(GenericBatch.model_fields)
    items = batch["properties"]["changes"]
    assert (items["minItems"], items["maxItems"]) == (1, generic.MAX_CHANGES)
    assert {"$ref": "#/$defs/change"} in schema["oneOf"]
    assert {"$ref": "#/$defs/batch"} in schema["oneOf"]


def test_schema_examples_validate_with_the_models() -> None:
    """The payload samples (also in the README section) pass the models."""
    assert generic.validate_message(json.loads(payload("generic", "single.json")))
    assert len(generic.validate_message(json.loads(payload("generic", "many.json")))) == 3
