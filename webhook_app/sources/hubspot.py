"""HubSpot Webhooks API: `POST /webhooks/hubspot`, a signed JSON array of 1..100 events.

Signature v3 (or v2/v1, per HUBSPOT_SIGNATURE_VERSIONS) over the raw body and the URI
HubSpot called (PUBLIC_BASE_URL + the raw path and query). A batch whose signature and
JSON are good is answered 200 even when some events are malformed: those go to the
dead-letter store (`invalid_event`, details {field, problem, index}, payload = the raw
event) and the others are enqueued. Events for objects other than contacts are counted
(`events_ignored`) and dropped. With HUBSPOT_PORTAL_IDS set, a batch naming any other
portal is refused with 403.

Mapping (reference crm-webhooks.md §1.4):
- `<object>.<action>` from `subscriptionType` (or `eventType`); `contact.*`, and
  `object.*` with objectTypeId `0-1`, are contacts.
- creation/propertyChange/deletion/privacyDeletion/merge/restore/associationChange
  -> create/update/delete/privacy_delete/merge/restore/association.
- propertyChange -> changes {propertyName: propertyValue} (scalars as text, null = cleared).
- merge -> object_id = the surviving record: `newObjectId` when given and different from
  `primaryObjectId` (HubSpot created a new record, so the primary was merged away too and
  joins merged_ids), else `primaryObjectId` (else objectId); merged_ids = mergedObjectIds.
- associationChange -> object_id = objectId, else fromObjectId; no field values.
- fingerprint("hubspot", portalId, subscriptionId, eventId, occurredAt, subscriptionType,
  objectId, propertyName): eventId alone is not unique.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Request, Response

from webhook_app.errors import ReceiverError
from webhook_app.intake import Receiver, Source, accepted_json, parse_json_body, receive
from webhook_app.signatures import SignatureError, raw_request_target, verify_hubspot
from worker.batch import Batch, InvalidEvent
from worker.events import ChangeEvent, Changes, Kind, fingerprint
from worker.settings import Settings

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
    subscription_id = _id(raw, "subscriptionId")
    object_id, merged_ids, changes = TARGETS.get(kind, _plain)(raw)
    return ChangeEvent(
        source="hubspot",
        account=portal,
        object_type=object_type,
        object_id=object_id,
        kind=kind,
        occurred_at_ms=occurred,
        fingerprint=fingerprint(
            "hubspot",
            portal,
            subscription_id,
            event_id,
            occurred,
            subscription,
            _optional_id(raw, "objectId"),
            raw.get("propertyName"),
        ),
        event_id=event_id,
        changes=changes,
        merged_ids=merged_ids,
        received_at_ms=received_ms,
    )


# ---- the Source ------------------------------------------------------------------------------
def _configured(settings: Settings) -> None:
    if settings.hubspot_client_secret is None:
        raise ReceiverError(
            403, "hubspot_not_configured", "HubSpot is not configured (HUBSPOT_CLIENT_SECRET)"
        )


def _authenticate(receiver: Receiver, req: Request, body: bytes) -> None:
    settings = receiver.settings
    assert settings.hubspot_client_secret is not None  # checked by _configured
    base = settings.public_base_url or req.host_url.rstrip("/")
    try:
        verify_hubspot(
            req.headers,
            secret=settings.hubspot_client_secret.get_secret_value(),
            method=req.method,
            uri=base + raw_request_target(req.environ),
            body=body,
            versions=settings.hubspot_signature_versions,
            now_ms=int(receiver.clock() * 1000),
        )
    except SignatureError as exc:
        raise ReceiverError(401, exc.code, exc.message) from None


def _check_portals(settings: Settings, items: list[Any]) -> None:
    if not settings.hubspot_portal_ids:
        return
    allowed = set(settings.hubspot_portal_ids)
    unknown = {
        str(item["portalId"])
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("portalId"), int | str)
        and not isinstance(item.get("portalId"), bool)
    } - allowed
    if unknown:
        raise ReceiverError(
            403,
            "unknown_portal",
            "the batch names a HubSpot portal that is not in HUBSPOT_PORTAL_IDS",
            {"field": "portalId", "portal_ids": sorted(unknown)[:10]},
        )


def _parse(receiver: Receiver, req: Request, body: bytes, received_ms: int) -> Batch:
    items = parse_json_body(body)
    if not isinstance(items, list):
        raise ReceiverError(
            400, "invalid_body", "body must be a JSON array of HubSpot events", {"field": "$"}
        )
    if not 1 <= len(items) <= MAX_EVENTS:
        raise ReceiverError(
            400, "invalid_batch_size", f"a batch holds 1 to {MAX_EVENTS} events", {"field": "$"}
        )
    _check_portals(receiver.settings, items)
    batch = Batch()
    for index, raw in enumerate(items):
        try:
            result = parse_event(raw, received_ms)
        except InvalidEvent as exc:
            batch.reject(raw, exc, index)
            continue
        if isinstance(result, str):
            batch.ignore(result)
        else:
            batch.add(result)
    return batch


SOURCE = Source(
    name="hubspot",
    media_types=frozenset({"application/json"}),
    configured=_configured,
    authenticate=_authenticate,
    parse=_parse,
    accepted=accepted_json,
)

blueprint = Blueprint("hubspot", __name__)


@blueprint.post("/webhooks/hubspot")
def hubspot_webhook() -> Response:
    """Receive a HubSpot Webhooks API batch."""
    return receive(SOURCE)
