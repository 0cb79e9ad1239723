"""POST /webhooks/salesforce: outbound messages in, the exact SOAP Ack or a Fault out."""

from __future__ import annotations

import time

import pytest
import redis
from flask.testing import FlaskClient

from tests.receiver.conftest import close_app
from tests.receiver.senders import (
    ORG_18,
    SALESFORCE_TOKEN,
    ingest_batches,
    make_settings,
    payload,
)
from webhook_app import create_app
from worker.deadletter import DeadLetters
from worker.events import ChangeEvent, fingerprint
from worker.metrics import Metrics

PATH = "/webhooks/salesforce"
XML = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


def post(client: FlaskClient, body: bytes, path: str = PATH, headers: dict[str, str] = XML):
    return client.post(path, data=body, headers=headers)


def test_ack_is_byte_for_byte_the_reference(client: FlaskClient) -> None:
    """A good message is answered 200 text/xml with exactly the reference Ack."""
    response = post(client, payload("salesforce", "two-contacts.xml"))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert response.data == payload("salesforce", "ack.xml")


def test_two_notifications_become_two_events(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """The reference sample yields two contact updates with ids, values, times and fingerprints."""
    post(client, payload("salesforce", "two-contacts.xml"))
    [batch] = ingest_batches(redis_client)
    first, second = (ChangeEvent.from_dict(e) for e in batch)
    assert first.source == "salesforce"
    assert first.account == ORG_18
    assert (first.object_type, first.object_id, first.kind) == (
        "contact",
        "0035g00000XyZ12AAB",
        "update",
    )
    assert first.event_id == "04l5g00000Hh1aBAAR"
    assert first.fingerprint == fingerprint("salesforce", ORG_18, "04l5g00000Hh1aBAAR")
    assert first.occurred_at_ms == 1760000098000  # 2025-10-09T08:54:58.000Z
    assert first.changes == {
        "AccountId": "0015g00000QwErTAAZ",
        "Email": "mara.quist@example.org",
        "FirstName": "Mara",
        "LastModifiedDate": "2025-10-09T08:54:58.000Z",
        "LastName": "Quist",
        "MobilePhone": "+44 7700 900123",
        "SystemModstamp": "2025-10-09T08:54:58.000Z",
        "Title": "Head of Procurement",
    }
    assert second.object_id == "0035g00000XyZ34AAD"
    assert second.changes["FirstName"] == "Jonas"
    assert second.occurred_at_ms == 1760000103000
    assert Metrics(redis_client).value("events_enqueued", source="salesforce") == 2


def test_leads_nils_other_types_and_bad_notifications(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """Leads map (nil -> None, SystemModstamp as time), Accounts are ignored, undated ones DLQ'd."""
    response = post(client, payload("salesforce", "mixed-types.xml"))
    assert response.status_code == 200
    assert response.data == payload("salesforce", "ack.xml")
    [[lead]] = ingest_batches(redis_client)
    assert (lead["object_type"], lead["object_id"]) == ("lead", "00Q5g00000AbCdEFGH")
    assert lead["changes"] == {
        "Company": "Quist Logistics",
        "Phone": None,
        "SystemModstamp": "2025-10-09T09:00:00.000Z",
    }
    assert Metrics(redis_client).value("events_ignored", source="salesforce", kind="Account") == 1
    [letter] = DeadLetters(redis_client).iter()
    assert (letter.reason, letter.source, letter.details["field"]) == (
        "invalid_event",
        "salesforce",
        "LastModifiedDate",
    )
    assert "0035g00000XyZ78AAH" in letter.payload


def test_eighteen_char_allow_list_matches_and_account_is_normal_form(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """An 18-char allow-list entry matches, and events carry the 18-char org id."""
    app = create_app(make_settings(redis_url, SALESFORCE_ORG_IDS="00D5g000004XmPqEAK"))
    try:
        response = post(app.test_client(), payload("salesforce", "two-contacts.xml"))
        assert response.status_code == 200
    finally:
        close_app(app)
    [batch] = ingest_batches(redis_client)
    assert {e["account"] for e in batch} == {"00D5g000004XmPqEAK"}


def test_org_id_with_a_wrong_checksum_is_a_400_client_fault(redis_url: str) -> None:
    """An 18-char OrganizationId whose last 3 characters are not its checksum is refused."""
    body = payload("salesforce", "two-contacts.xml").replace(
        b"00D5g000004XmPqEAK", b"00D5g000004XmPqXYZ"
    )
    app = create_app(make_settings(redis_url))
    try:
        response = post(app.test_client(), body)
    finally:
        close_app(app)
    assert response.status_code == 400
    assert b"checksum" in response.data


def test_unknown_org_is_a_403_client_fault(redis_url: str, redis_client: redis.Redis) -> None:
    """A message from an org outside SALESFORCE_ORG_IDS is a 403 soapenv:Client Fault."""
    app = create_app(make_settings(redis_url, SALESFORCE_ORG_IDS="00D000000000001"))
    try:
        response = post(app.test_client(), payload("salesforce", "two-contacts.xml"))
    finally:
        close_app(app)
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert b"<faultcode>soapenv:Client</faultcode>" in response.data
    assert b"unknown_organization" in response.data
    assert ingest_batches(redis_client) == []


@pytest.mark.parametrize("name", ["billion-laughs.xml", "external-entity.xml"])
def test_dtds_and_entities_are_refused_unexpanded(
    client: FlaskClient, redis_client: redis.Redis, name: str
) -> None:
    """XML bombs and external entities are refused with 400 before any expansion."""
    started = time.perf_counter()
    response = post(client, payload("salesforce", name))
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 400
    assert b"xml_forbidden" in response.data
    assert b"lol" not in response.data
    assert b"root:" not in response.data
    assert ingest_batches(redis_client) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"<not xml", b"malformed_xml"),
        (b"<a/>", b"invalid_message"),
        (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
            b"invalid_message",
        ),
    ],
)
def test_malformed_messages_are_400_client_faults(
    client: FlaskClient, body: bytes, code: bytes
) -> None:
    """Broken XML or a wrong structure is a 400 soapenv:Client Fault naming the problem."""
    response = post(client, body)
    assert response.status_code == 400
    assert b"<faultcode>soapenv:Client</faultcode>" in response.data
    assert code in response.data


def test_too_many_notifications_is_400(client: FlaskClient) -> None:
    """More than 100 notifications in one message is refused."""
    sample = payload("salesforce", "two-contacts.xml").decode()
    start = sample.index("<Notification>")
    end = sample.rindex("</Notification>") + len("</Notification>")
    one = sample[start : sample.index("</Notification>") + len("</Notification>")]
    body = (sample[:start] + one * 101 + sample[end:]).encode()
    response = post(client, body)
    assert response.status_code == 400
    assert b"at most 100" in response.data


def test_wrong_content_type_is_a_415_fault(client: FlaskClient) -> None:
    """A JSON body on the SOAP endpoint is a 415 Fault."""
    response = post(client, b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 415
    assert b"<soapenv:Fault>" in response.data


def test_shared_token(redis_url: str) -> None:
    """With SALESFORCE_TOKEN set, ?token= must match: missing or wrong is a 401 Fault."""
    app = create_app(make_settings(redis_url, SALESFORCE_TOKEN=SALESFORCE_TOKEN))
    try:
        client = app.test_client()
        body = payload("salesforce", "two-contacts.xml")
        missing = post(client, body)
        wrong = post(client, body, path=PATH + "?token=nope")
        good = post(client, body, path=f"{PATH}?token={SALESFORCE_TOKEN}")
    finally:
        close_app(app)
    assert (missing.status_code, wrong.status_code, good.status_code) == (401, 401, 200)
    assert b"token_invalid" in wrong.data
    assert SALESFORCE_TOKEN.encode() not in wrong.data


def test_unknown_xml_encoding_is_400_not_503(client: FlaskClient) -> None:
    """An XML declaration with an unknown encoding (found by fuzzing) is a 400 Fault."""
    body = (
        b'<?xml version="1.0" encoding="TF-8"?>'
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"/>'
    )
    resp = client.post(
        "/webhooks/salesforce", data=body, headers={"Content-Type": "text/xml; charset=utf-8"}
    )
    assert resp.status_code == 400
    assert b"soapenv:Client" in resp.data
