"""HubSpot Webhooks API: `POST /webhooks/hubspot`, a signed JSON array of 1..100 events.

Signature v3 (or v2/v1, per HUBSPOT_SIGNATURE_VERSIONS) over the raw body and the URI
HubSpot called (PUBLIC_BASE_URL + the raw path and query). A batch whose signature and
JSON are good is answered 200 even when some events are malformed: those go to the
dead-letter store (`invalid_event`, details {field, problem, index}, payload = the raw
event) and the others are enqueued. Events for objects other than contacts are counted
(`events_ignored`) and dropped. With HUBSPOT_PORTAL_IDS set, a batch naming any other
portal is refused with 403.

Each event is turned into a ChangeEvent by the pure parser in `worker.crm_events.hubspot`
(shared with the Webhooks Journal poller; its docstring holds the mapping and the
fingerprint rule).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Request, Response

from webhook_app.errors import ReceiverError
from webhook_app.intake import Receiver, Source, accepted_json, parse_json_body, receive
from webhook_app.signatures import SignatureError, raw_request_target, verify_hubspot
from worker.batch import Batch, InvalidEvent
from worker.crm_events.hubspot import MAX_EVENTS, parse_event
from worker.settings import Settings

__all__ = ["MAX_EVENTS", "SOURCE", "blueprint", "parse_event"]


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
    path="/webhooks/hubspot",
)

blueprint = Blueprint("hubspot", __name__)


@blueprint.post(SOURCE.path)
def hubspot_webhook() -> Response:
    """Receive a HubSpot Webhooks API batch."""
    return receive(SOURCE)
