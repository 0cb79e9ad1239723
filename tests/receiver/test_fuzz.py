"""Fuzzing every webhook endpoint: malformed bodies and headers never get a 5xx."""

from __future__ import annotations

import json
import time
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.receiver.senders import generic_headers, hubspot_v1_headers, hubspot_v3_headers, payload

FUZZ = hypothesis_settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(["0-1", "0-2", "contact.merge", "2025-10-09T08:55:00Z", "", "7070707"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
header_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60
)  # what an HTTP header can carry (latin-1)

HUBSPOT_FIELDS = [
    "eventId",
    "subscriptionId",
    "portalId",
    "appId",
    "occurredAt",
    "subscriptionType",
    "eventType",
    "attemptNumber",
    "objectId",
    "propertyName",
    "propertyValue",
    "objectTypeId",
    "primaryObjectId",
    "mergedObjectIds",
    "newObjectId",
    "fromObjectId",
    "changeSource",
]
hubspot_events = st.dictionaries(
    st.sampled_from(HUBSPOT_FIELDS),
    st.one_of(
        json_values,
        st.sampled_from(
            [
                "contact.creation",
                "contact.propertyChange",
                "contact.deletion",
                "contact.privacyDeletion",
                "contact.merge",
                "contact.restore",
                "contact.associationChange",
                "object.creation",
                "company.creation",
            ]
        ),
        st.integers(min_value=0, max_value=2**53),
        st.lists(st.integers(min_value=0, max_value=10**12), max_size=3),
    ),
    max_size=len(HUBSPOT_FIELDS),
)
hubspot_bodies = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(hubspot_events, json_values), min_size=0, max_size=110).map(
        lambda v: json.dumps(v).encode()
    ),
    json_values.map(lambda v: json.dumps(v).encode()),
)


def _assert_healthy(client: FlaskClient, status: int) -> None:
    event(f"HTTP {status}")  # shown by --hypothesis-show-statistics
    assert status < 500, status
    assert client.get("/healthz").status_code == 200


@FUZZ
@given(
    body=hubspot_bodies,
    mode=st.sampled_from(["v3", "v1", "garbage"]),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "X-HubSpot-Signature",
                "X-HubSpot-Signature-Version",
                "X-HubSpot-Signature-v3",
                "X-HubSpot-Request-Timestamp",
                "Content-Type",
                "Content-Encoding",
            ]
        ),
        header_text,
        max_size=6,
    ),
    query=st.text(alphabet="abc=&%3A2F?;/", max_size=20),
)
def test_fuzz_hubspot(
    client: FlaskClient, body: bytes, mode: str, headers: dict[str, str], query: str
) -> None:
    """Any HubSpot body, signed or not, with any headers, is answered below 500."""
    path = "/webhooks/hubspot" + (f"?{query}" if query else "")
    if mode == "v3":
        headers = hubspot_v3_headers(body, path=path)
    elif mode == "v1":
        headers = hubspot_v1_headers(body)
    else:
        headers = {"Content-Type": "application/json", **headers}
    response = client.post(path, data=body, headers=headers)
    _assert_healthy(client, response.status_code)
    assert "error" in response.json or response.json["status"] == "accepted"


SF_TEMPLATE = payload("salesforce", "two-contacts.xml").decode()
NIL = ' xsi:nil="true"'
sf_field_names = st.sampled_from(
    ["Id", "Email", "LastModifiedDate", "SystemModstamp", "FirstName", "x", "Weird-Name"]
)


@st.composite
def salesforce_bodies(draw: Any) -> bytes:
    """A mutated outbound message: random notifications, types, fields, org ids, or raw bytes."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=400))
    if choice == 1:  # a valid message with bytes spliced in
        raw = SF_TEMPLATE.encode()
        at = draw(st.integers(0, len(raw)))
        cut = draw(st.integers(0, 40))
        return raw[:at] + draw(st.binary(max_size=20)) + raw[at + cut :]
    notifications = []
    for _ in range(draw(st.integers(0, 4))):
        fields = "".join(
            f"<sf:{name}{NIL if draw(st.booleans()) else ''}>"
            f"{_xml_text(draw(st.text(max_size=25)))}</sf:{name}>"
            for name in draw(st.lists(sf_field_names, max_size=5))
        )
        sobject_type = draw(st.sampled_from(["sf:Contact", "sf:Lead", "sf:Account", "", "x:y:z"]))
        note_id = draw(st.sampled_from(["<Id>04l5g00000Hh1aBAAR</Id>", "", "<Id/>"]))
        notifications.append(
            f'<Notification>{note_id}<sObject xsi:type="{sobject_type}" '
            f'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{fields}</sObject></Notification>'
        )
    org = draw(
        st.sampled_from(["00D5g000004XmPqEAK", "00D5g000004XmPq", "bad", "", "00D000000000001AAA"])
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org}</OrganizationId>{''.join(notifications)}"
        "</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


def _xml_text(value: str) -> str:
    return (
        "".join(
            c for c in value if c in "\t\n\r" or (ord(c) >= 32 and not 0xD800 <= ord(c) <= 0xDFFF)
        )
        .replace("&", "&amp;")
        .replace("<", "&lt;")
    )


@FUZZ
@given(
    body=salesforce_bodies(),
    content_type=st.sampled_from(
        ["text/xml; charset=utf-8"] * 6 + ["application/xml", "text/plain", ""]
    ),
    query=st.text(alphabet="token=abc&%", max_size=12),
)
def test_fuzz_salesforce(client: FlaskClient, body: bytes, content_type: str, query: str) -> None:
    """Any outbound-message body is answered below 500 with the Ack or a SOAP Fault."""
    path = "/webhooks/salesforce" + (f"?{query}" if query else "")
    response = client.post(path, data=body, headers={"Content-Type": content_type})
    _assert_healthy(client, response.status_code)
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert b"<Ack>true</Ack>" in response.data or b"<soapenv:Fault>" in response.data


GENERIC_FIELDS = [
    "account",
    "object_type",
    "object_id",
    "occurred_at",
    "kind",
    "changes",
    "merged_ids",
    "x",
]
generic_changes = st.dictionaries(
    st.sampled_from(GENERIC_FIELDS),
    st.one_of(
        json_values,
        st.sampled_from(["contact", "lead", "merge", "update", "2025-10-09T08:55:00Z"]),
        st.integers(min_value=10**11, max_value=2 * 10**12),
        st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.text(max_size=8)), max_size=3),
    ),
    max_size=len(GENERIC_FIELDS),
)
VALID_CHANGE = {"object_id": "0035g00000XyZ12AAB", "occurred_at": "2025-10-09T08:55:00Z"}


@st.composite
def mostly_valid_changes(draw: Any) -> dict[str, Any]:
    """A valid change with at most one field replaced by an arbitrary value."""
    change: dict[str, Any] = dict(VALID_CHANGE)
    extra = draw(generic_changes)
    if extra and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(extra)))
        change[key] = extra[key]
    return change


generic_bodies = st.one_of(
    st.binary(max_size=300),
    generic_changes.map(lambda v: json.dumps(v).encode()),
    mostly_valid_changes().map(lambda v: json.dumps(v).encode()),
    st.lists(mostly_valid_changes(), max_size=110).map(
        lambda v: json.dumps({"changes": v}).encode()
    ),
    st.lists(generic_changes, max_size=110).map(lambda v: json.dumps({"changes": v}).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
)


@FUZZ
@given(
    body=generic_bodies,
    signed=st.booleans(),
    msg_id=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
    ),
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "Content-Type"]),
        header_text,
        max_size=4,
    ),
)
def test_fuzz_generic(
    client: FlaskClient, body: bytes, signed: bool, msg_id: str, headers: dict[str, str]
) -> None:
    """Any generic body, signed or not, with any headers, is answered below 500."""
    if signed:
        headers = generic_headers(body, msg_id=msg_id, timestamp=int(time.time()))
    else:
        headers = {"Content-Type": "application/json", **headers}
    response = client.post("/webhooks/generic", data=body, headers=headers)
    _assert_healthy(client, response.status_code)
    assert "error" in response.json or response.json["status"] == "accepted"
