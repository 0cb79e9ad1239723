"""Journal files -> ChangeEvents (pure), and the fingerprint shared with the webhook parser."""

from __future__ import annotations

from typing import Any

import pytest

from pull_sources.hubspot_journal.entries import InvalidFile, parse_entry
from worker.crm_events.hubspot import parse_event as parse_webhook

PORTAL = 62515


def entry(*events: dict[str, Any]) -> dict[str, Any]:
    return {
        "offset": "7d0c6f4e-0000-4000-8000-000000000001",
        "publishedAt": 1,
        "journalEvents": list(events),
    }


def update(**fields: Any) -> dict[str, Any]:
    event = {
        "type": "OBJECT",
        "portalId": PORTAL,
        "occurredAt": 1781000000000,
        "action": "UPDATE",
        "objectTypeId": "0-1",
        "objectId": 51001,
        "propertyChanges": {"jobtitle": "CFO", "phone": "+44 20 7946 0018"},
    }
    event.update(fields)
    return event


def webhook(prop: str, value: str, **fields: Any) -> dict[str, Any]:
    event = {
        "eventId": 99,
        "subscriptionId": 4100,
        "portalId": PORTAL,
        "appId": 1,
        "occurredAt": 1781000000000,
        "subscriptionType": "object.propertyChange",
        "objectTypeId": "0-1",
        "attemptNumber": 3,
        "objectId": 51001,
        "propertyName": prop,
        "propertyValue": value,
    }
    event.update(fields)
    return event


def test_update_with_two_properties_is_two_events_matching_the_webhooks() -> None:
    """One journal UPDATE of two properties gives two events whose fingerprints equal the
    two webhook propertyChange events of the same change."""
    batch, newest = parse_entry(entry(update()), received_ms=5)
    assert [(e.kind, e.changes) for e in batch.events] == [
        ("update", {"jobtitle": "CFO"}),
        ("update", {"phone": "+44 20 7946 0018"}),
    ]
    assert newest == 1781000000000
    hooks = [
        parse_webhook(webhook("jobtitle", "CFO"), 5),
        parse_webhook(webhook("phone", "+44 20 7946 0018"), 5),
    ]
    assert [e.fingerprint for e in batch.events] == [h.fingerprint for h in hooks]  # type: ignore[union-attr]
    assert all(e.source == "hubspot" and e.account == str(PORTAL) for e in batch.events)


def test_create_merge_delete_restore_and_gdpr_map_like_webhooks() -> None:
    """Every contact action maps to the kind (and fingerprint) the webhook parser gives it."""
    events = [
        update(action="CREATE", propertyChanges={"email": "a@example.org"}),
        update(
            action="MERGE",
            propertyChanges=None,
            primaryObjectId=51001,
            mergedObjectIds=[51002],
            newObjectId=51001,
        ),
        update(action="DELETE", propertyChanges=None, objectId=51003),
        update(action="RESTORE", propertyChanges=None, objectId=51003),
        {
            "type": "GDPR_PRIVACY_DELETION",
            "portalId": PORTAL,
            "occurredAt": 1781000000000,
            "action": "GDPR_DELETE",
            "objectId": 51004,
        },
    ]
    batch, _ = parse_entry(entry(*events), received_ms=5)
    assert [(e.kind, e.object_id) for e in batch.events] == [
        ("create", "51001"),
        ("update", "51001"),
        ("merge", "51001"),
        ("delete", "51003"),
        ("restore", "51003"),
        ("privacy_delete", "51004"),
    ]
    assert batch.events[2].merged_ids == ("51002",)
    hook_types = [
        "object.creation",
        None,
        "object.merge",
        "object.deletion",
        "object.restore",
        "contact.privacyDeletion",
    ]
    for event, hook_type in zip(batch.events, hook_types, strict=True):
        if hook_type is None:
            continue
        raw = webhook("x", "y", subscriptionType=hook_type, objectId=int(event.object_id))
        del raw["propertyName"], raw["propertyValue"]
        if hook_type == "object.merge":
            raw.update(primaryObjectId=51001, mergedObjectIds=[51002], newObjectId=51001)
        assert parse_webhook(raw, 5).fingerprint == event.fingerprint  # type: ignore[union-attr]


def test_list_shaped_properties_and_iso_times_are_read() -> None:
    """propertyChanges as a list of {propertyName, propertyValue} and ISO-8601 occurredAt parse."""
    raw = update(
        occurredAt="2026-06-09T10:13:20Z",
        propertyChanges=[
            {"propertyName": "jobtitle", "propertyValue": "CFO"},
            {"name": "phone", "value": None},
        ],
    )
    batch, _ = parse_entry(entry(raw), received_ms=5)
    assert [e.changes for e in batch.events] == [{"jobtitle": "CFO"}, {"phone": None}]
    assert batch.events[0].occurred_at_ms == 1781000000000


def test_bad_event_is_rejected_alone_naming_the_field() -> None:
    """An event without objectId is rejected with its field; the others still go."""
    bad = update()
    del bad["objectId"]
    batch, _ = parse_entry(entry(update(), bad, update(occurredAt="yesterday")), received_ms=5)
    assert len(batch.events) == 2
    assert [(r.field, r.index) for r in batch.rejected] == [("objectId", 1), ("occurredAt", 2)]


def test_other_objects_lifecycle_and_other_portals_are_ignored() -> None:
    """Companies, app installs and (with an allow-list) other portals are counted, not synced."""
    events = [
        update(objectTypeId="0-2"),
        {"type": "APP_LIFECYCLE_EVENT", "action": "APP_INSTALL", "portalId": PORTAL},
        update(portalId=1234),
        update(propertyChanges={"email": "x@example.org"}),
    ]
    batch, _ = parse_entry(entry(*events), received_ms=5, portals=frozenset({str(PORTAL)}))
    assert [e.changes for e in batch.events] == [{"email": "x@example.org"}]
    assert batch.ignored == {"0-2": 1, "app_install": 1, "other_portal": 1}


@pytest.mark.parametrize("data", [[], {"offset": "x"}, "text"])
def test_a_file_without_an_event_list_is_invalid(data: Any) -> None:
    """Not a journal entry at all: InvalidFile (the poller dead-letters the file)."""
    with pytest.raises(InvalidFile):
        parse_entry(data, received_ms=5)
