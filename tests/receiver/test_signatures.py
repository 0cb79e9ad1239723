"""Signature checks against the official and derived vectors (crm-webhooks.md §1.3, §1.7, §3)."""

from __future__ import annotations

import pytest

from tests.receiver.senders import payload
from webhook_app.signatures import (
    SignatureError,
    hubspot_v1,
    hubspot_v2,
    hubspot_v3,
    hubspot_v3_uri,
    raw_request_target,
    standard_webhooks_signature,
    verify_hubspot,
    verify_standard_webhook,
    whsec_key,
)

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
URI = "https://www.example.com/webhook_uri"
B1 = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
    b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
)
B2 = b'{"example_field":"example_value"}'
B3 = b"{'example_field':'example_value'}"
ALL = ("v1", "v2", "v3")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (B1, "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"),  # row 1
        (B3, "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"),  # row 4
    ],
)
def test_hubspot_v1_official_vectors(body: bytes, expected: str) -> None:
    """v1 reproduces HubSpot's official vectors (rows 1 and 4) and verifies them."""
    assert hubspot_v1(SECRET, body) == expected
    headers = {"X-HubSpot-Signature": expected, "X-HubSpot-Signature-Version": "v1"}
    assert (
        verify_hubspot(
            headers, secret=SECRET, method="POST", uri=URI, body=body, versions=ALL, now_ms=0
        )
        == "v1"
    )


@pytest.mark.parametrize(
    ("method", "body", "expected"),
    [
        ("GET", b"", "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"),  # 2
        ("POST", B2, "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900"),  # 3
        ("POST", B3, "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383"),  # 5
    ],
)
def test_hubspot_v2_official_vectors(method: str, body: bytes, expected: str) -> None:
    """v2 reproduces HubSpot's official vectors (rows 2, 3 and 5) and verifies them."""
    assert hubspot_v2(SECRET, method, URI, body) == expected
    headers = {"X-HubSpot-Signature": expected.upper(), "X-HubSpot-Signature-Version": "v2"}
    assert (
        verify_hubspot(
            headers, secret=SECRET, method=method, uri=URI, body=body, versions=ALL, now_ms=0
        )
        == "v2"
    )


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("1693657560000", "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="),  # row 6
        ("1700000300000", "RnbPH7+UMKVkbV32P8bz450N4M56aPmcru1+D3kSDtw="),  # row 7
        ("15000000", "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="),  # row 8
    ],
)
def test_hubspot_v3_official_vectors(timestamp: str, expected: str) -> None:
    """v3 reproduces HubSpot's official vectors (rows 6-8) and verifies them at that time."""
    assert hubspot_v3(SECRET, "POST", URI, B3, timestamp) == expected
    headers = {"X-HubSpot-Signature-V3": expected, "X-HubSpot-Request-Timestamp": timestamp}
    now = int(timestamp) + 299_999
    assert (
        verify_hubspot(
            headers, secret=SECRET, method="POST", uri=URI, body=B3, versions=ALL, now_ms=now
        )
        == "v3"
    )


@pytest.mark.parametrize(
    ("received", "signed", "expected"),
    [
        (
            URI + "?portal=62515&ref=a%3Ab%20c",
            URI + "?portal=62515&ref=a:b%20c",
            "0xfBv3uRfDoB+lgBtF3iEdsRFwrx/F42f1Ua1H9Ejc4=",
        ),
        (URI, URI, "oaA3M5dEtt6kFsseJD/Hv/x+JNl1vsoxFj4oxmwP6Go="),
    ],
)
def test_hubspot_v3_derived_uri_vectors(received: str, signed: str, expected: str) -> None:
    """The received URI is decoded with HubSpot's table before signing (derived vectors)."""
    assert hubspot_v3_uri(received) == signed
    assert hubspot_v3(SECRET, "POST", signed, B2, "1693657560000") == expected
    headers = {"X-HubSpot-Signature-v3": expected, "X-HubSpot-Request-Timestamp": "1693657560000"}
    verify_hubspot(
        headers,
        secret=SECRET,
        method="POST",
        uri=received,
        body=B2,
        versions=("v3",),
        now_ms=1693657560000,
    )


def test_hubspot_v3_uri_table_is_exact() -> None:
    """Exactly the 12 upper-case escapes are decoded; lower-case, %20, %26, UTF-8 stay."""
    assert (
        hubspot_v3_uri("/p%3A%2F%3F%40%21%24%27%28%29%2A%2C%3B?q=%3a%20%26%C3%A4%25%3A")
        == "/p:/?@!$'()*,;?q=%3a%20%26%C3%A4%25:"
    )
    assert hubspot_v3_uri("/x?y=1?z") == "/x?y=1?z"  # literal ? untouched
    assert hubspot_v3_uri("%253A") == "%253A"  # no double decoding


def test_raw_request_target_prefers_raw_uri_and_falls_back_to_quoting() -> None:
    """The signed path is the raw request target; without one, the quoted path + raw query."""
    assert raw_request_target({"RAW_URI": "/a%3Ab?c=%3A", "PATH_INFO": "/a:b"}) == "/a%3Ab?c=%3A"
    assert raw_request_target({"REQUEST_URI": "https://h.example/a?b"}) == "/a?b"
    fallback = raw_request_target({"PATH_INFO": "/a b:c", "QUERY_STRING": "x=%3A"})
    assert fallback == "/a%20b:c?x=%3A"
    assert raw_request_target({"PATH_INFO": "/a"}) == "/a"


def test_hubspot_sample_batch_v1_and_v3() -> None:
    """The §1.7 sample batch (800 bytes) verifies with its derived v1 and v3 signatures."""
    body = payload("hubspot", "sample-batch.json")
    assert len(body) == 800
    secret = "demo-client-secret-0000"
    v1 = "a85ed6c8bda63bafda49bffd9e92fd278d07231abba0918e2aa571234b4628d9"
    v3 = "M1JDIqsNcv+2NUM+y5ei1IDMA0lJdzAoB2gKq+Z0HF8="
    uri = "https://hooks.example.net/hubspot/events"
    assert hubspot_v1(secret, body) == v1
    assert hubspot_v3(secret, "POST", uri, body, "1760000030000") == v3
    headers = {
        "X-HubSpot-Signature-v3": v3,
        "X-HubSpot-Request-Timestamp": "1760000030000",
        "X-HubSpot-Signature": v1,
        "X-HubSpot-Signature-Version": "v1",
    }
    kwargs = {"secret": secret, "method": "POST", "uri": uri, "body": body}
    assert verify_hubspot(headers, **kwargs, versions=ALL, now_ms=1760000030000) == "v3"
    # v3 not accepted here: the legacy v1 pair HubSpot also sends is checked instead.
    assert verify_hubspot(headers, **kwargs, versions=("v1",), now_ms=0) == "v1"


@pytest.mark.parametrize(
    ("offset_ms", "ok"),
    [(0, True), (300_000, True), (-300_000, True), (300_001, False), (-300_001, False)],
)
def test_hubspot_v3_window_is_five_minutes_both_ways(offset_ms: int, ok: bool) -> None:
    """A v3 timestamp more than 5 minutes in the past or the future is refused."""
    timestamp = "1693657560000"
    headers = {
        "X-HubSpot-Signature-v3": "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y=",
        "X-HubSpot-Request-Timestamp": timestamp,
    }
    now = int(timestamp) + offset_ms
    kwargs = {"secret": SECRET, "method": "POST", "uri": URI, "body": B3, "versions": ALL}
    if ok:
        assert verify_hubspot(headers, **kwargs, now_ms=now) == "v3"
    else:
        with pytest.raises(SignatureError) as err:
            verify_hubspot(headers, **kwargs, now_ms=now)
        assert err.value.code == "timestamp_out_of_window"


@pytest.mark.parametrize(
    ("headers", "versions", "code"),
    [
        ({}, ALL, "signature_missing"),
        (
            {"X-HubSpot-Signature": "ab" * 32, "X-HubSpot-Signature-Version": "v1"},
            ALL,
            "signature_mismatch",
        ),
        (
            {"X-HubSpot-Signature": "ab", "X-HubSpot-Signature-Version": "v9"},
            ALL,
            "signature_version_unknown",
        ),
        (
            {"X-HubSpot-Signature": "ab", "X-HubSpot-Signature-Version": "v1"},
            ("v3",),
            "signature_version_not_allowed",
        ),
        ({"X-HubSpot-Signature-v3": "x"}, ALL, "timestamp_missing"),
        (
            {"X-HubSpot-Signature-v3": "x", "X-HubSpot-Request-Timestamp": "12e4"},
            ALL,
            "timestamp_invalid",
        ),
        (
            {"X-HubSpot-Signature-v3": "ü", "X-HubSpot-Request-Timestamp": "0"},
            ALL,
            "signature_mismatch",
        ),
        (
            {"X-HubSpot-Signature-v3": "x", "X-HubSpot-Request-Timestamp": "0"},
            ("v1",),
            "signature_version_not_allowed",
        ),
    ],
)
def test_hubspot_refusals_have_codes(
    headers: dict[str, str], versions: tuple[str, ...], code: str
) -> None:
    """Each way a HubSpot signature can be wrong has its own code."""
    with pytest.raises(SignatureError) as err:
        verify_hubspot(
            headers, secret=SECRET, method="POST", uri=URI, body=B1, versions=versions, now_ms=0
        )
    assert err.value.code == code
    assert SECRET not in err.value.message


SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_standard_webhooks_official_vector() -> None:
    """The standard-webhooks reference vector signs and verifies."""
    body = b'{"test": 2432232314}'
    key = whsec_key(SW_SECRET)
    assert standard_webhooks_signature(key, SW_ID, "1614265330", body) == SW_SIG
    headers = {"webhook-id": SW_ID, "webhook-timestamp": "1614265330", "webhook-signature": SW_SIG}
    assert verify_standard_webhook(headers, body, [key], now=1614265330 + 300) == SW_ID


def test_standard_webhooks_derived_vector_and_rotation() -> None:
    """The derived Salesforce-callout vector verifies, also as the second of two keys."""
    body = (
        b'{"type":"contact.updated","timestamp":"2025-10-09T08:55:00Z","data":{"sf_id":'
        b'"0035g00000XyZ12AAB","FirstName":"Mara","LastName":"Quist","Email":'
        b'"mara.quist@example.org"}}'
    )
    key = whsec_key("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX")
    assert key == bytes(range(24))
    expected = "v1,Xe2g1AIwgqIp/VozXqmn0D3NJVOIzKlgSNp+F7YDimg="
    msg_id = "msg_sf_0035g00000XyZ12AAB_1"
    assert standard_webhooks_signature(key, msg_id, "1760000100", body) == expected
    headers = {
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": "1760000100",
        "Webhook-Signature": f"v1a,ignored v1,AAAA {expected}",
    }
    keys = [whsec_key(SW_SECRET), key]
    assert verify_standard_webhook(headers, body, keys, now=1760000100 - 300) == msg_id


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"webhook-id": ""}, "signature_missing"),
        ({"webhook-signature": "v1,AAAA"}, "signature_mismatch"),
        ({"webhook-timestamp": "1614265330.5"}, "timestamp_invalid"),
        ({"webhook-timestamp": str(1614265330 + 301)}, "timestamp_out_of_window"),
        ({"webhook-timestamp": str(1614265330 - 301)}, "timestamp_out_of_window"),
    ],
)
def test_standard_webhooks_refusals(change: dict[str, str], code: str) -> None:
    """Breaking one thing of a valid Standard Webhooks request gives that thing's code."""
    headers = {"webhook-id": SW_ID, "webhook-timestamp": "1614265330", "webhook-signature": SW_SIG}
    headers.update(change)
    with pytest.raises(SignatureError) as err:
        verify_standard_webhook(
            headers, b'{"test": 2432232314}', [whsec_key(SW_SECRET)], now=1614265330
        )
    assert err.value.code == code


def test_whsec_key_accepts_missing_padding_and_refuses_garbage() -> None:
    """A whsec_ secret may omit base64 padding; non-base64 is a ValueError."""
    assert whsec_key("whsec_AAEC") == b"\x00\x01\x02"
    assert whsec_key("whsec_AAE") == b"\x00\x01"
    with pytest.raises(ValueError, match="base64"):
        whsec_key("whsec_!!!")
