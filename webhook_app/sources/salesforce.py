"""Salesforce outbound messages: `POST /webhooks/salesforce`, SOAP 1.1 `notifications`.

Outbound messages are unsigned and org ids are not secret (they appear in every
Web-to-Lead form), so the checks are: SALESFORCE_ORG_IDS must be set (else 403
`salesforce_not_configured`); the URL must carry `?token=<SALESFORCE_TOKEN>` (compared in
constant time; settings refuse to start without a token unless
SALESFORCE_ALLOW_UNAUTHENTICATED=true, for local tests only); `OrganizationId` must be a
15- or 18-character id (an 18-character id's checksum is verified) whose 18-character
form is in SALESFORCE_ORG_IDS. The XML is parsed with defusedxml with DTDs, entities and
external references forbidden, after the body-size limit, and refused when nested deeper
than MAX_XML_DEPTH.

Each `Notification` (at most 100) becomes one `update` ChangeEvent: object_type from
`xsi:type` (`sf:Contact` -> contact, `sf:Lead` -> lead; other types are counted as
ignored), object_id = `sf:Id`, changes = every other field as text (`xsi:nil` -> None),
occurred_at from LastModifiedDate else SystemModstamp, event_id = the notification Id,
fingerprint("salesforce", org, notification Id) and account = org, where org is the
18-character form of OrganizationId (one normal form, see worker.salesforce_ids);
whole_record = True (the message carries every selected field, changed or not, so the
worker stamps a field with LastModifiedDate only when its value changed). A malformed
notification is dead-lettered (`invalid_event`, payload = its XML).

Answers: HTTP 200 + the exact `Ack` of reference §2.5 once every notification is
enqueued or dead-lettered. Anything else is a SOAP Fault (`text/xml`): `soapenv:Client`
with our 4xx status for a message that is wrong (unknown org, bad token, malformed XML,
bomb, wrong content type); Salesforce resends it for 24 h regardless, which is harmless
and shows up in its outbound-message queue for the admin. `soapenv:Server` with 503 and
Retry-After when the events could not be queued. Never HTTP 500.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from xml.etree.ElementTree import Element, ParseError, tostring
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from flask import Blueprint, Request, Response

from webhook_app.errors import ReceiverError
from webhook_app.intake import Receiver, Source, receive
from worker.batch import Batch, InvalidEvent
from worker.events import ChangeEvent, Changes, fingerprint
from worker.salesforce_ids import SalesforceIdError, to_18
from worker.settings import Settings

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100
# Envelope/Body/notifications/Notification/sObject/field is 6 deep; anything far deeper is
# an attack on the recursive code that would later serialize it (dead letters).
MAX_XML_DEPTH = 32
MAX_FIELD_NAME = 255  # Salesforce API names are at most 40 (80 with namespaces)
CONTENT_TYPE = "text/xml; charset=utf-8"

# xsi:type of the sObject (without its prefix) -> our object_type.
OBJECT_TYPES: dict[str, str] = {"Contact": "contact", "Lead": "lead"}
# Where the change time comes from, in order of preference.
TIME_FIELDS = ("LastModifiedDate", "SystemModstamp")

ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">\n'
    b"  <soapenv:Body>\n"
    b'    <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    b"<Ack>true</Ack></notificationsResponse>\n"
    b"  </soapenv:Body>\n"
    b"</soapenv:Envelope>\n"
)

_FAULT = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">\n'
    "  <soapenv:Body>\n"
    "    <soapenv:Fault>\n"
    "      <faultcode>{faultcode}</faultcode>\n"
    "      <faultstring>{faultstring}</faultstring>\n"
    "    </soapenv:Fault>\n"
    "  </soapenv:Body>\n"
    "</soapenv:Envelope>\n"
)


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _is_nil(element: Element) -> bool:
    return element.get(_q(XSI_NS, "nil"), "").strip().lower() in {"true", "1"}


def _depth_ok(root: Element) -> bool:
    """True when no element is nested deeper than MAX_XML_DEPTH (iterative, no recursion)."""
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_XML_DEPTH:
            return False
        stack.extend((child, depth + 1) for child in element)
    return True


def _xml_text(element: Element) -> str:
    """The element's XML for a dead letter (depth is already bounded by _depth_ok)."""
    try:
        text = tostring(element, encoding="unicode")
    except (RecursionError, ValueError):
        return "<unserializable notification>"
    return text


def _iso_ms(value: str, name: str) -> int:
    try:
        parsed = datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise InvalidEvent(name, "not an ISO 8601 date-time") from None


# ---- parsing ---------------------------------------------------------------------------------
def _bad(message: str, field: str) -> ReceiverError:
    return ReceiverError(400, "invalid_message", message, {"field": field})


def _notifications(body: bytes) -> Element:
    """The `notifications` element of a well-formed outbound message, or ReceiverError 400."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise ReceiverError(
            400, "xml_forbidden", "DTDs, entities and external references are not accepted"
        ) from None
    except (ParseError, ValueError, RecursionError, LookupError):
        # LookupError: an XML declaration naming an encoding Python does not know.
        raise ReceiverError(400, "malformed_xml", "body is not well-formed XML") from None
    if not _depth_ok(root):
        raise ReceiverError(
            400,
            "xml_too_deep",
            f"XML elements nest deeper than {MAX_XML_DEPTH} levels",
            {"field": "$"},
        )
    if root.tag != _q(SOAP_NS, "Envelope"):
        raise _bad("root element must be a SOAP 1.1 Envelope", "Envelope")
    soap_body = root.find(_q(SOAP_NS, "Body"))
    if soap_body is None:
        raise _bad("the Envelope has no Body", "Body")
    notifications = soap_body.find(_q(OUTBOUND_NS, "notifications"))
    if notifications is None:
        raise _bad("the Body holds no outbound-message notifications", "notifications")
    return notifications


def _text(parent: Element, local: str) -> str | None:
    child = parent.find(_q(OUTBOUND_NS, local))
    if child is None or child.text is None or not child.text.strip():
        return None
    return child.text.strip()


def parse_notification(notification: Element, org: str, received_ms: int) -> ChangeEvent | str:
    """One Notification -> a ChangeEvent, or the name of an ignored sObject type."""
    notification_id = _text(notification, "Id")
    if notification_id is None or len(notification_id) > 64:
        raise InvalidEvent("Id", "missing notification Id")
    sobject = notification.find(_q(OUTBOUND_NS, "sObject"))
    if sobject is None:
        raise InvalidEvent("sObject", "missing")
    sobject_type = _local(sobject.get(_q(XSI_NS, "type"), "")).rpartition(":")[2]
    if not sobject_type:
        raise InvalidEvent("sObject", "missing xsi:type")
    object_type = OBJECT_TYPES.get(sobject_type)
    if object_type is None:
        return sobject_type[:64]
    object_id: str | None = None
    changes: Changes = {}
    for field in sobject:
        if not isinstance(field.tag, str):
            continue  # comments and processing instructions
        name = _local(field.tag)
        value = None if _is_nil(field) else (field.text or "")
        if name == "Id":
            object_id = (value or "").strip()
        elif len(name) > MAX_FIELD_NAME:
            raise InvalidEvent("sObject", f"a field name is longer than {MAX_FIELD_NAME}")
        else:
            changes[name] = value
    if not object_id:
        raise InvalidEvent("Id", "missing sObject Id")
    if len(object_id) > 64:
        raise InvalidEvent("Id", "the sObject Id is longer than 64 characters")
    time_field = next((f for f in TIME_FIELDS if changes.get(f)), None)
    if time_field is None:
        raise InvalidEvent("LastModifiedDate", "missing (and no SystemModstamp)")
    occurred = _iso_ms(changes[time_field] or "", time_field)
    return ChangeEvent(
        source="salesforce",
        account=org,
        object_type=object_type,
        object_id=object_id,
        kind="update",
        occurred_at_ms=occurred,
        fingerprint=fingerprint("salesforce", org, notification_id),
        event_id=notification_id,
        changes=changes,
        received_at_ms=received_ms,
        whole_record=True,  # every field carries LastModifiedDate, changed or not
    )


def _parse(receiver: Receiver, req: Request, body: bytes, received_ms: int) -> Batch:
    notifications = _notifications(body)
    sent = _text(notifications, "OrganizationId")
    try:
        org = to_18(sent or "")
    except SalesforceIdError as exc:
        raise _bad(f"OrganizationId is missing or not an org id: {exc}", "OrganizationId") from None
    if org not in receiver.settings.salesforce_org_ids:  # 18-character forms both
        raise ReceiverError(
            403, "unknown_organization", "OrganizationId is not in SALESFORCE_ORG_IDS"
        )
    items = notifications.findall(_q(OUTBOUND_NS, "Notification"))
    if len(items) > MAX_NOTIFICATIONS:
        raise _bad(f"a message holds at most {MAX_NOTIFICATIONS} notifications", "Notification")
    batch = Batch()
    batch.accounts.add(org)
    for index, item in enumerate(items):
        try:
            result = parse_notification(item, org, received_ms)
        except InvalidEvent as exc:
            batch.reject(_xml_text(item), exc, index)
            continue
        if isinstance(result, str):
            batch.ignore(result)
        else:
            batch.add(result)
    return batch


# ---- the Source ------------------------------------------------------------------------------
def _configured(settings: Settings) -> None:
    if not settings.salesforce_org_ids:
        raise ReceiverError(
            403,
            "salesforce_not_configured",
            "Salesforce is not configured: set SALESFORCE_ORG_IDS to the org ids to accept",
        )


def _authenticate(receiver: Receiver, req: Request, body: bytes) -> None:
    token = receiver.settings.salesforce_token
    if token is None:  # only with SALESFORCE_ALLOW_UNAUTHENTICATED=true (settings check it)
        return
    given = req.args.get("token", "")
    if not hmac.compare_digest(
        given.encode("utf-8", "replace"), token.get_secret_value().encode("utf-8")
    ):
        raise ReceiverError(401, "token_invalid", "the ?token= query parameter is missing or wrong")


def ack(batch: Batch) -> Response:
    """HTTP 200 with the SOAP Ack (every notification is enqueued or dead-lettered)."""
    return Response(ACK, status=200, content_type=CONTENT_TYPE)


def fault(err: ReceiverError) -> Response:
    """A SOAP 1.1 Fault with our status: soapenv:Client for 4xx, soapenv:Server for 5xx."""
    body = _FAULT.format(
        faultcode="soapenv:Server" if err.status >= 500 else "soapenv:Client",
        faultstring=escape(f"{err.code}: {err.message}"),
    )
    response = Response(body.encode("utf-8"), status=err.status, content_type=CONTENT_TYPE)
    if err.retry_after is not None:
        response.headers["Retry-After"] = str(err.retry_after)
    return response


SOURCE = Source(
    name="salesforce",
    media_types=frozenset({"text/xml", "application/xml", "application/soap+xml"}),
    configured=_configured,
    authenticate=_authenticate,
    parse=_parse,
    accepted=ack,
    refused=fault,
    path="/webhooks/salesforce",
)

blueprint = Blueprint("salesforce", __name__)


@blueprint.post(SOURCE.path)
def salesforce_webhook() -> Response:
    """Receive a Salesforce outbound message."""
    return receive(SOURCE)
