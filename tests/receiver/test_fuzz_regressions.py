"""Inputs `bench/fuzz.py` found that broke the receiver, kept as regression tests."""

from __future__ import annotations

import pytest
import redis
from flask.testing import FlaskClient

from tests.receiver.senders import payload
from worker.celery_app import QUEUE_INGEST

SF_PATH = "/webhooks/salesforce"
XML = {"Content-Type": "text/xml; charset=utf-8"}

# Found by bench/fuzz.py (target salesforce): an XML declaration naming an encoding that
# Python does not know, or a codec that is not a text encoding, made expat raise
# LookupError, which webhook_app/sources/salesforce.py `_notifications` did not catch: the
# receiver answered 503 internal_error, so Salesforce would retry a message that can never
# succeed. Fixed in cdfd469 (LookupError -> 400 malformed_xml); these keep it fixed.


@pytest.mark.parametrize("encoding", ["AUTF-8", "x-unknown", "rot13", "base64"])
def test_unknown_xml_encoding_is_a_400_fault(
    client: FlaskClient, redis_client: redis.Redis, encoding: str
) -> None:
    """A declaration with an unusable encoding is malformed input: 400 SOAP Fault, no 5xx."""
    body = f'<?xml version="1.0" encoding="{encoding}"?><a/>'.encode()
    response = client.post(SF_PATH, data=body, headers=XML)
    assert response.status_code == 400, response.data[:300]
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert b"<soapenv:Fault>" in response.data
    assert b"malformed_xml" in response.data
    assert redis_client.llen(QUEUE_INGEST) == 0
    assert client.get("/healthz").status_code == 200


def test_outbound_message_with_mangled_encoding_is_a_400_fault(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """The fuzzer's own find: a real outbound message whose declaration says "AUTF-8"."""
    body = payload("salesforce", "two-contacts.xml").replace(
        b'encoding="UTF-8"', b'encoding="AUTF-8"', 1
    )
    assert b'encoding="AUTF-8"' in body
    response = client.post(SF_PATH, data=body, headers=XML)
    assert response.status_code == 400, response.data[:300]
    assert b"<soapenv:Fault>" in response.data
    assert redis_client.llen(QUEUE_INGEST) == 0
