"""Journal file formats (a plug-in: HubSpot has published no example, reference §2 UNDOC).

`FORMATS[name](entry) -> dict` renders one journal entry as the downloaded file. The
default, "journal-v1", follows the only shape seen (a third-party v4-beta client,
reference H20): {"offset", "publishedAt", "journalEvents": [{"type", "portalId",
"occurredAt", "action", "objectTypeId", "objectId", "propertyChanges"}]}; for the
actions it does not show we chose: MERGE adds "primaryObjectId", "mergedObjectIds",
"newObjectId" (the webhook's names); GDPR_DELETE has type "GDPR_PRIVACY_DELETION".
"journal-list" is a variant with propertyChanges as a list of {propertyName,
propertyValue} and ISO-8601 times, to prove the client parses tolerantly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hubspot_sandbox.model import Change, Entry


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _event(change: Change, *, listed: bool) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "GDPR_PRIVACY_DELETION" if change.action == "GDPR_DELETE" else "OBJECT",
        "portalId": change.portal_id,
        "occurredAt": _iso(change.occurred_at_ms) if listed else change.occurred_at_ms,
        "action": change.action,
        "objectTypeId": "0-1",
        "objectId": change.object_id,
    }
    if change.properties:
        if listed:
            event["propertyChanges"] = [
                {"propertyName": k, "propertyValue": v} for k, v in change.properties.items()
            ]
        else:
            event["propertyChanges"] = dict(change.properties)
    if change.action == "MERGE":
        event["primaryObjectId"] = change.object_id
        event["mergedObjectIds"] = list(change.merged_ids)
        event["newObjectId"] = change.new_object_id or change.object_id
    return event


def journal_v1(entry: Entry) -> dict[str, Any]:
    return {
        "offset": entry.offset,
        "publishedAt": int(entry.published_at * 1000),
        "journalEvents": [_event(c, listed=False) for c in entry.changes],
    }


def journal_list(entry: Entry) -> dict[str, Any]:
    return {
        "offset": entry.offset,
        "publishedAt": _iso(int(entry.published_at * 1000)),
        "journalEvents": [_event(c, listed=True) for c in entry.changes],
    }


FORMATS: dict[str, Callable[[Entry], dict[str, Any]]] = {
    "journal-v1": journal_v1,
    "journal-list": journal_list,
}
