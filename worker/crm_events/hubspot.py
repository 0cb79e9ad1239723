"""HubSpot change events -> ChangeEvents (pure; shared by the webhook receiver and the
Webhooks Journal poller).

Mapping (reference crm-webhooks.md §1.4, crm-sources-2026.md §1):
- `<object>.<action>` from `subscriptionType` (or `eventType`); `contact.*`, and
  `object.*` with objectTypeId `0-1`, are contacts.
- creation/propertyChange/deletion/privacyDeletion/merge/restore/associationChange
  -> create/update/delete/privacy_delete/merge/restore/association.
- propertyChange -> changes {propertyName: propertyValue} (scalars as text, null = cleared).
- merge -> object_id = the surviving record: `newObjectId` when given and different from
  `primaryObjectId` (HubSpot created a new record, so the primary was merged away too and
  joins merged_ids), else `primaryObjectId` (else objectId); merged_ids = mergedObjectIds.
- associationChange -> object_id = objectId, else fromObjectId; no field values.

Fingerprint (`change_fingerprint`): what changed, not how it was delivered:
("hubspot", portal, object type, kind, object id, occurredAt, property, value) plus, for
merges, the merged ids and, for associations, the association's ends and type. eventId is
not unique (HubSpot says so), and the Webhooks Journal carries no eventId or
subscriptionId at all, so a change HubSpot pushes as a webhook AND writes to the journal
gets one fingerprint and the second copy is dropped as a duplicate. Two deliveries with
the same content (a retried batch, two overlapping subscriptions, a repeated eventId)
have the same effect, so folding them is safe. See docs/architecture.md "HubSpot
Webhooks Journal".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from worker.batch import InvalidEvent
from worker.events import ChangeEvent, Changes, Kind, fingerprint

MAX_EVENTS = 100
MAX_ID_LENGTH = 64
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

# HubSpot action (after the dot) -> our ChangeEvent kind.
ACTIONS: dict[str, Kind] = {
    "creation": "create",
    "propertyChange": "update",
    "deletion": "delete",
    "privacyDeletion": "privacy_delete",
    "merge": "merge",
    "restore": "restore",
    "associationChange": "association",
}
# Subscription prefix, or objectTypeId for `object.*` subscriptions -> our object_type.
OBJECT_TYPES: dict[str, str] = {"contact": "contact", "0-1": "contact"}


# ---- field readers: each raises InvalidEvent naming the field ------------------------------
def _id_value(value: Any, name: str) -> str:
    if isinstance(value, bool) or value is None:
        raise InvalidEvent(name, "missing" if value is None else "must be an id")
    if isinstance(value, int):
        if value < 0:
            raise InvalidEvent(name, "must not be negative")
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable():
        return value
    raise InvalidEvent(name, "must be an integer or a short string id")


def _id(raw: dict[str, Any], name: str) -> str:
    return _id_value(raw.get(name), name)


def _optional_id(raw: dict[str, Any], name: str) -> str | None:
    return None if raw.get(name) is None else _id(raw, name)


def _epoch_ms(raw: dict[str, Any], name: str) -> int:
    value = raw.get(name)
    if value is None:
        raise InvalidEvent(name, "missing")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EPOCH_MS:
        raise InvalidEvent(name, "must be epoch milliseconds (an integer)")
    return value


def _text(value: Any, name: str) -> str | None:
    """A property value as text: strings as sent, numbers/booleans as JSON, null = cleared."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise InvalidEvent(name, "must be a string, number, boolean or null")


# ---- per kind: (object_id, merged_ids, changes) --------------------------------------------
Target = tuple[str, tuple[str, ...], Changes]


def _plain(raw: dict[str, Any]) -> Target:
    return _id(raw, "objectId"), (), {}


def _property_change(raw: dict[str, Any]) -> Target:
    name = raw.get("propertyName")
    if not isinstance(name, str) or not name or len(name) > 255:
        raise InvalidEvent("propertyName", "missing or not a property name")
    return _id(raw, "objectId"), (), {name: _text(raw.get("propertyValue"), "propertyValue")}


def _merge(raw: dict[str, Any]) -> Target:
    primary = _optional_id(raw, "primaryObjectId") or _id(raw, "objectId")
    new = _optional_id(raw, "newObjectId")
    merged_raw = raw.get("mergedObjectIds")
    if not isinstance(merged_raw, list) or len(merged_raw) > MAX_EVENTS:
        raise InvalidEvent("mergedObjectIds", "missing or not a list of ids")
    merged = [_id_value(m, "mergedObjectIds") for m in merged_raw]
    survivor = primary
    if new is not None and new != primary:
        survivor = new
        merged.append(primary)
    return survivor, tuple(dict.fromkeys(m for m in merged if m != survivor)), {}


def _association(raw: dict[str, Any]) -> Target:
    object_id = _optional_id(raw, "objectId") or _id(raw, "fromObjectId")
    return object_id, (), {}


TARGETS: dict[str, Callable[[dict[str, Any]], Target]] = {
    "update": _property_change,
    "merge": _merge,
    "association": _association,
}


def parse_event(raw: Any, received_ms: int) -> ChangeEvent | str:
    """One HubSpot event -> a ChangeEvent, or the name of an ignored object type."""
    if not isinstance(raw, dict):
        raise InvalidEvent("$", "not a JSON object")
    subscription = raw.get("subscriptionType", raw.get("eventType"))
    if not isinstance(subscription, str) or "." not in subscription:
        raise InvalidEvent("subscriptionType", "missing or not like 'contact.creation'")
    prefix, _, action = subscription.partition(".")
    type_key = prefix
    if prefix == "object":
        type_key = _id(raw, "objectTypeId")
    object_type = OBJECT_TYPES.get(type_key)
    if object_type is None:
        return type_key[:MAX_ID_LENGTH]
    kind = ACTIONS.get(action)
    if kind is None:
        raise InvalidEvent("subscriptionType", f"unknown action {action[:64]!r}")
    portal = _id(raw, "portalId")
    occurred = _epoch_ms(raw, "occurredAt")
    event_id = _id(raw, "eventId")
    _id(raw, "subscriptionId")  # required by the format, not part of the fingerprint
    object_id, merged_ids, changes = TARGETS.get(kind, _plain)(raw)
    return ChangeEvent(
        source="hubspot",
        account=portal,
        object_type=object_type,
        object_id=object_id,
        kind=kind,
        occurred_at_ms=occurred,
        fingerprint=change_fingerprint(
            portal,
            object_type,
            kind,
            object_id,
            occurred,
            changes,
            merged_ids,
            _association_parts(raw) if kind == "association" else (),
        ),
        event_id=event_id,
        changes=changes,
        merged_ids=merged_ids,
        received_at_ms=received_ms,
    )


def _association_parts(raw: dict[str, Any]) -> tuple[object, ...]:
    return tuple(
        raw.get(name)
        for name in ("fromObjectId", "toObjectId", "associationType", "associationRemoved")
    )


def change_fingerprint(
    portal: str,
    object_type: str,
    kind: str,
    object_id: str,
    occurred_ms: int,
    changes: Changes,
    merged_ids: Iterable[str] = (),
    extra: Iterable[object] = (),
) -> str:
    """The dedupe key of one HubSpot change, the same whichever way it reached us.

    `changes` holds at most one property (HubSpot sends one event per property; the
    journal parser splits its entries the same way)."""
    prop, value = next(iter(changes.items()), (None, None))
    return fingerprint(
        "hubspot",
        portal,
        object_type,
        kind,
        object_id,
        occurred_ms,
        None if prop is None else prop.lower(),
        value,
        ",".join(sorted(merged_ids)),
        *extra,
    )


# Field readers other HubSpot formats (the Webhooks Journal) share with the webhook parser.
read_id = _id
read_epoch_ms = _epoch_ms
property_text = _text
merge_target = _merge
