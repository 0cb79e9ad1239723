"""A downloaded Webhooks Journal file -> ChangeEvents (pure).

HubSpot has published no example of the file (reference crm-sources-2026.md §2, UNDOC);
the only shape seen is {"offset", "publishedAt", "journalEvents": [{"type", "portalId",
"occurredAt", "action", "objectTypeId", "objectId", "propertyChanges"}]}. We parse it
tolerantly: `journalEvents` (or `events`), `occurredAt` as epoch ms, a numeric string or
ISO-8601, `propertyChanges` as {name: value} or [{propertyName|name, propertyValue|value}],
merges with the webhook's field names (`primaryObjectId`, `mergedObjectIds`,
`newObjectId`). A malformed event is rejected alone (dead letter `invalid_event`).

Actions -> kinds: CREATE -> create (+ one update per property), UPDATE -> one update per
property, DELETE -> delete, MERGE -> merge, RESTORE -> restore, GDPR_DELETE (or type
GDPR_PRIVACY_DELETION) -> privacy_delete, SNAPSHOT -> one update per property,
ASSOCIATION_* -> association. One ChangeEvent per property, fingerprinted with
`worker.crm_events.hubspot.change_fingerprint`, so a change also pushed as a webhook
(one event per property there too) dedupes to one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.batch import Batch, InvalidEvent
from worker.crm_events.hubspot import (
    OBJECT_TYPES,
    change_fingerprint,
    merge_target,
    property_text,
    read_epoch_ms,
    read_id,
)
from worker.events import ChangeEvent, Changes, Kind

ACTIONS: dict[str, Kind] = {
    "CREATE": "create",
    "UPDATE": "update",
    "SNAPSHOT": "update",
    "DELETE": "delete",
    "MERGE": "merge",
    "RESTORE": "restore",
    "GDPR_DELETE": "privacy_delete",
    "ASSOCIATION_ADDED": "association",
    "ASSOCIATION_REMOVED": "association",
}
IGNORED_ACTIONS = frozenset({"APP_INSTALL", "APP_UNINSTALL", "ADDED_TO_LIST", "REMOVED_FROM_LIST"})


class InvalidFile(ValueError):
    """The file is not a journal entry at all (not JSON, no event list)."""


def _occurred(raw: dict[str, Any]) -> int:
    value = raw.get("occurredAt")
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            raw = {"occurredAt": int(text)}
        else:
            try:
                stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidEvent("occurredAt", "must be epoch ms or ISO-8601") from None
            if stamp.tzinfo is None:
                raise InvalidEvent("occurredAt", "ISO-8601 time needs a time zone")
            return int(stamp.timestamp() * 1000)
    return read_epoch_ms(raw, "occurredAt")


def _property_changes(raw: dict[str, Any]) -> list[tuple[str, str | None]]:
    value = raw.get("propertyChanges", raw.get("properties"))
    if value is None:
        return []
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = []
        for item in value:
            if not isinstance(item, dict):
                raise InvalidEvent("propertyChanges", "list items must be objects")
            pairs.append(
                (
                    item.get("propertyName", item.get("name")),
                    item.get("propertyValue", item.get("value")),
                )
            )
    else:
        raise InvalidEvent("propertyChanges", "must be an object or a list")
    out = []
    for name, val in pairs:
        if not isinstance(name, str) or not name or len(name) > 255:
            raise InvalidEvent("propertyChanges", "a property name is missing or too long")
        out.append((name, property_text(val, f"propertyChanges.{name}")))
    return out


def parse_event(raw: Any, offset: str, index: int, received_ms: int) -> list[ChangeEvent] | str:
    """One journal event -> its ChangeEvents, or the label of an ignored kind of event."""
    if not isinstance(raw, dict):
        raise InvalidEvent("$", "not a JSON object")
    event_type = str(raw.get("type") or "OBJECT").upper()
    action = str(raw.get("action") or "").upper()
    if event_type in ("GDPR_PRIVACY_DELETION", "GDPR_DELETE"):
        action = "GDPR_DELETE"
    if action in IGNORED_ACTIONS or event_type in ("APP_LIFECYCLE_EVENT", "LIST_MEMBERSHIP"):
        return action.lower() or event_type.lower()
    kind = ACTIONS.get(action)
    if kind is None:
        raise InvalidEvent("action", f"unknown action {action[:64]!r}")
    type_id = str(raw.get("objectTypeId") or ("0-1" if kind == "privacy_delete" else ""))
    object_type = OBJECT_TYPES.get(type_id)
    if object_type is None:
        if not type_id:
            raise InvalidEvent("objectTypeId", "missing")
        return type_id[:64]
    portal = read_id(raw, "portalId")
    occurred = _occurred(raw)
    merged: tuple[str, ...] = ()
    if kind == "merge":
        object_id, merged, _ = merge_target(raw)
    else:
        object_id = read_id(raw, "objectId")
    properties = _property_changes(raw) if kind in ("create", "update") else []
    event_id = f"journal:{offset}:{index}"

    def make(kind: Kind, changes: Changes, extra: tuple[object, ...] = ()) -> ChangeEvent:
        return ChangeEvent(
            source="hubspot",
            account=portal,
            object_type=object_type,
            object_id=object_id,
            kind=kind,
            occurred_at_ms=occurred,
            fingerprint=change_fingerprint(
                portal, object_type, kind, object_id, occurred, changes, merged, extra
            ),
            event_id=event_id,
            changes=changes,
            merged_ids=merged,
            received_at_ms=received_ms,
        )

    if kind == "association":
        extra = (
            raw.get("objectId"),
            raw.get("associatedObjectId"),
            raw.get("associationType"),
            action == "ASSOCIATION_REMOVED",
        )
        return [make("association", {}, extra)]
    events = [make(kind, {})] if kind != "update" else []
    events += [make("update", {name: value}) for name, value in properties]
    return events


def parse_entry(
    data: Any, received_ms: int, portals: frozenset[str] = frozenset()
) -> tuple[Batch, int]:
    """A journal file (parsed JSON) -> (Batch, newest occurredAt in it, 0 when none).

    With `portals` set, events of other portals are ignored (label `other_portal`)."""
    if not isinstance(data, dict):
        raise InvalidFile("a journal file must be a JSON object")
    items = data.get("journalEvents", data.get("events"))
    if not isinstance(items, list):
        raise InvalidFile("a journal file must hold a journalEvents list")
    offset = str(data.get("offset", ""))[:64]
    batch = Batch()
    newest = 0
    for index, raw in enumerate(items):
        try:
            result = parse_event(raw, offset, index, received_ms)
        except InvalidEvent as exc:
            batch.reject(raw, exc, index)
            continue
        if isinstance(result, str):
            batch.ignore(result)
            continue
        if portals and result and result[0].account not in portals:
            batch.ignore("other_portal")
            continue
        for event in result:
            batch.add(event)
            newest = max(newest, event.occurred_at_ms)
    return batch, newest
