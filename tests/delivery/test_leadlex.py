"""Unit tests for worker.leadlex: httpx.MockTransport, no network."""

from __future__ import annotations

import email.utils
import json
import logging
import pickle
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from worker import leadlex
from worker.leadlex import (
    ContactNotFoundError,
    InsufficientPermissionsError,
    InvalidKeyError,
    LeadLexClient,
    LeadLexConnectionError,
    LeadLexError,
    LeadLexServerError,
    LeadLexTimeoutError,
    LeadLexValidationError,
    RateInfo,
    RateLimitedError,
    UnexpectedResponseError,
    shared_client,
)

BASE = "https://data.leadlex.com/functions/v1/api-gateway"
KEY = "wbk_live_SECRETsecret0123456789abcdefghijklmnop"
NOW = 1_708_900_000.0  # 2024-02-25T22:26:40Z; the next reset is 1708905600
RATE_HEADERS = {
    "X-RateLimit-Limit": "1000",
    "X-RateLimit-Remaining": "995",
    "X-RateLimit-Reset": "1708905600",
    "X-Request-ID": "req_01HY1K0E7V8Q0YXH7DSTX5B3CA",
}

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, **kwargs: Any) -> LeadLexClient:
    """A client whose transport is `handler`, with a fixed clock."""
    return LeadLexClient(
        BASE, KEY, transport=httpx.MockTransport(handler), clock=lambda: NOW, **kwargs
    )


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    """A handler that always answers `status` with a JSON `body` and the rate headers."""

    def handler(request: httpx.Request) -> httpx.Response:
        merged = {**RATE_HEADERS, **(headers or {})}
        if isinstance(body, str | bytes):
            return httpx.Response(status, content=body, headers=merged)
        return httpx.Response(status, json=body, headers=merged)

    return handler


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A LeadLex error envelope."""
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return {"error": err}


def raises(exc: Exception) -> Handler:
    """A handler that fails with a transport exception."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


# ---- requests ----------------------------------------------------------------------------


def test_update_contact_sends_patch_with_auth_json_and_parses_envelope() -> None:
    """PATCH goes to {base}/v1/contacts/{id} with Bearer auth and JSON; `data` is unwrapped."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"data": {"id": "c1", "job_title": "CTO"}}, headers=RATE_HEADERS
        )

    with make_client(handler) as client:
        resp = client.update_contact("c1", {"job_title": "CTO"})
    req = seen[0]
    assert req.method == "PATCH"
    assert str(req.url) == f"{BASE}/v1/contacts/c1"
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"] == "leadlex-sync/0.1"
    assert "Idempotency-Key" not in req.headers
    assert json.loads(req.content) == {"job_title": "CTO"}
    assert resp.status == 200
    assert resp.data == {"id": "c1", "job_title": "CTO"}
    assert resp.request_id == "req_01HY1K0E7V8Q0YXH7DSTX5B3CA"
    assert resp.rate == RateInfo(limit=1000, remaining=995, reset=1708905600, retry_after=None)
    assert client.last_rate == resp.rate


def test_idempotency_key_is_sent_when_given() -> None:
    """update_contact(idempotency_key=...) sends an Idempotency-Key header."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"id": "c1"}})

    make_client(handler).update_contact("c1", {"notes": "hi"}, idempotency_key="k-123")
    assert seen[0].headers["Idempotency-Key"] == "k-123"


def test_timeouts_are_connect_5s_and_read_the_configured_value() -> None:
    """The request carries httpx timeouts: connect 5 s, read/write/pool = timeout."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {}})

    make_client(handler, timeout=12.5).get_contact("c1")
    assert seen[0].extensions["timeout"] == {
        "connect": 5.0,
        "read": 12.5,
        "write": 12.5,
        "pool": 12.5,
    }


def test_contact_ids_are_path_quoted_and_unusable_ids_refused() -> None:
    """A contact id is one quoted path segment; empty, '.' and '..' are refused."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {}})

    client = make_client(handler)
    client.get_contact("a/b c?d#e")
    assert seen[0].url.raw_path == b"/functions/v1/api-gateway/v1/contacts/a%2Fb%20c%3Fd%23e"
    for bad in ("", ".", ".."):
        with pytest.raises(ValueError, match="contact id"):
            client.get_contact(bad)
    with pytest.raises(ValueError, match="at least one field"):
        client.update_contact("c1", {})
    assert len(seen) == 1


def test_search_sends_query_and_keeps_meta() -> None:
    """search_contacts uses GET /v1/contacts?search=&per_page= and returns data + meta."""
    seen: list[httpx.Request] = []
    body = {"data": {"contacts": [{"id": "c1"}]}, "meta": {"page": 1, "per_page": 5, "total": 1}}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body)

    resp = make_client(handler).search_contacts("ada@example.com", per_page=5)
    assert seen[0].method == "GET"
    assert seen[0].url.path.endswith("/v1/contacts")
    assert dict(seen[0].url.params) == {"search": "ada@example.com", "per_page": "5"}
    assert resp.data["contacts"] == [{"id": "c1"}]
    assert resp.meta == {"page": 1, "per_page": 5, "total": 1}


@pytest.mark.parametrize("status", [200, 201])
def test_create_accepts_200_and_201(status: int) -> None:
    """create_contact POSTs /v1/contacts and accepts either success status."""
    resp = make_client(answer(status, {"data": {"id": "new"}})).create_contact({"email": "a@b.co"})
    assert resp.status == status
    assert resp.data == {"id": "new"}


def test_204_returns_empty_data() -> None:
    """A 204 (no body) is a success with empty data."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(204, headers=RATE_HEADERS)

    resp = make_client(handler).update_contact("c1", {"email": "a@b.co"})
    assert (resp.status, resp.data) == (204, {})


# ---- errors: status -> class -------------------------------------------------------------

CASES = [
    # status, body, class, retryable, maybe_applied (PATCH), opens_circuit
    (400, error_body("validation_error", "Invalid"), LeadLexValidationError, False, False, False),
    (401, error_body("invalid_key", "Invalid API key"), InvalidKeyError, False, False, True),
    (
        403,
        error_body("insufficient_permissions", "No"),
        InsufficientPermissionsError,
        False,
        False,
        True,
    ),
    (404, error_body("not_found", "Contact not found"), ContactNotFoundError, False, False, False),
    (429, error_body("rate_limited", "Rate limit exceeded"), RateLimitedError, True, False, False),
    (500, error_body("internal_error", "Boom"), LeadLexServerError, True, True, False),
    (
        502,
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
        LeadLexServerError,
        True,
        True,
        False,
    ),
    (503, None, LeadLexServerError, True, True, False),
    (
        402,
        error_body("insufficient_credits", "No credits"),
        UnexpectedResponseError,
        False,
        False,
        False,
    ),
    (409, error_body("conflict", "Conflict"), UnexpectedResponseError, False, False, False),
    (302, None, UnexpectedResponseError, False, False, False),
    (404, "Not Found", UnexpectedResponseError, False, False, False),
]


@pytest.mark.parametrize(("status", "body", "cls", "retryable", "applied", "circuit"), CASES)
def test_status_maps_to_error_class_and_flags(
    status: int, body: Any, cls: type[LeadLexError], retryable: bool, applied: bool, circuit: bool
) -> None:
    """Each HTTP status becomes its exception class with the right retry/applied/circuit flags."""
    client = make_client(answer(status, body))
    with pytest.raises(cls) as info:
        client.update_contact("c1", {"job_title": "CTO"})
    err = info.value
    assert type(err) is cls
    assert err.status == status
    assert err.retryable is retryable
    assert err.maybe_applied is applied
    assert err.opens_circuit is circuit
    assert err.request_id == "req_01HY1K0E7V8Q0YXH7DSTX5B3CA"
    assert err.rate == client.last_rate
    assert err.rate is not None
    assert err.rate.remaining == 995
    assert "\n" not in str(err)
    assert str(err).startswith(f"leadlex {status} ")


def test_validation_error_exposes_field_errors_and_one_line_message() -> None:
    """A 400's details.fields become field_errors and appear in str(err)."""
    body = error_body(
        "validation_error",
        "Invalid request parameters",
        {"fields": {"email": "Invalid email format", "phone": ["too short", "no country"]}},
    )
    with pytest.raises(LeadLexValidationError) as info:
        make_client(answer(400, body)).update_contact("c1", {"email": "nope"})
    err = info.value
    assert err.code == "validation_error"
    assert err.field_errors == {"email": "Invalid email format", "phone": "too short; no country"}
    assert str(err) == (
        "leadlex 400 validation_error: Invalid request parameters "
        "(email: Invalid email format, phone: too short; no country) "
        "[req_01HY1K0E7V8Q0YXH7DSTX5B3CA]"
    )


def test_html_502_is_a_server_error_with_a_readable_message() -> None:
    """A gateway's HTML 502 page is tolerated: code http_502, reason phrase, body in details."""
    with pytest.raises(LeadLexServerError) as info:
        make_client(answer(502, "<html>\n<h1>Bad Gateway</h1>\n</html>")).get_contact("c1")
    err = info.value
    assert err.code == "http_502"
    assert err.message == "Bad Gateway (non-JSON body)"
    assert "Bad Gateway" in err.details["body"]
    assert err.maybe_applied is False  # a GET never applies anything


def test_404_without_leadlex_envelope_points_at_the_base_url() -> None:
    """A 404 that is not a LeadLex error body is not 'contact not found' (likely a bad URL)."""
    body = {"code": "NOT_FOUND", "message": "Requested function was not found"}
    with pytest.raises(UnexpectedResponseError, match="LEADLEX_BASE_URL"):
        make_client(answer(404, body)).update_contact("c1", {"email": "a@b.co"})


def test_non_json_2xx_is_unexpected_and_maybe_applied_for_writes() -> None:
    """A 200 whose body is not a JSON object is unexpected; a PATCH may have been applied."""
    with pytest.raises(UnexpectedResponseError) as info:
        make_client(answer(200, "OK")).update_contact("c1", {"notes": "x"})
    assert info.value.maybe_applied is True
    assert info.value.retryable is False
    with pytest.raises(UnexpectedResponseError) as info:
        make_client(answer(200, "OK")).get_contact("c1")
    assert info.value.maybe_applied is False


def test_rate_limited_error_carries_retry_after() -> None:
    """A 429's Retry-After is parsed onto err.rate and err.retry_after."""
    client = make_client(
        answer(429, error_body("rate_limited", "Rate limit exceeded"), {"Retry-After": "17"})
    )
    with pytest.raises(RateLimitedError) as info:
        client.update_contact("c1", {"email": "a@b.co"})
    assert info.value.retry_after == 17.0
    assert client.last_rate is not None
    assert client.last_rate.retry_after == 17.0


def test_errors_survive_pickling() -> None:
    """Errors pickle (Celery result backends) with their attributes and flags."""
    body = error_body("validation_error", "Bad", {"fields": {"email": "bad"}})
    with pytest.raises(LeadLexValidationError) as info:
        make_client(answer(400, body)).update_contact("c1", {"email": "x"})
    copy = pickle.loads(pickle.dumps(info.value))  # noqa: S301 - our own bytes
    assert type(copy) is LeadLexValidationError
    assert str(copy) == str(info.value)
    assert copy.field_errors == {"email": "bad"}
    assert copy.rate == info.value.rate


# ---- transport errors --------------------------------------------------------------------

TRANSPORT = [
    (httpx.ConnectError, LeadLexConnectionError, False),
    (httpx.ConnectTimeout, LeadLexTimeoutError, False),
    (httpx.PoolTimeout, LeadLexTimeoutError, False),
    (httpx.ReadTimeout, LeadLexTimeoutError, True),
    (httpx.WriteTimeout, LeadLexTimeoutError, True),
    (httpx.RemoteProtocolError, LeadLexConnectionError, True),
    (httpx.ReadError, LeadLexConnectionError, True),
    (httpx.WriteError, LeadLexConnectionError, True),
]


@pytest.mark.parametrize(("exc", "cls", "applied"), TRANSPORT)
def test_transport_errors_are_retryable_and_say_whether_the_request_was_sent(
    exc: type[httpx.TransportError], cls: type[LeadLexError], applied: bool
) -> None:
    """Failures before sending are not applied; failures after sending may have applied a PATCH."""
    with pytest.raises(cls) as info:
        make_client(raises(exc("boom"))).update_contact("c1", {"notes": "x"})
    err = info.value
    assert err.retryable is True
    assert err.maybe_applied is applied
    assert err.status is None
    assert err.opens_circuit is False
    assert str(err).startswith(f"leadlex {err.code}: {exc.__name__}: boom")
    assert isinstance(err.__cause__, exc)


def test_read_timeout_on_get_is_not_applied() -> None:
    """A GET never changes anything, so its timeouts are never 'maybe applied'."""
    with pytest.raises(LeadLexTimeoutError) as info:
        make_client(raises(httpx.ReadTimeout("slow"))).get_contact("c1")
    assert info.value.maybe_applied is False


# ---- the API key never leaks -------------------------------------------------------------


def test_api_key_never_appears_in_errors_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    """Neither error str/repr/details nor the client repr nor logs contain the API key."""
    caplog.set_level(logging.DEBUG)
    echo = error_body("invalid_key", f"Invalid API key {KEY}", {"key": KEY})
    handlers: list[Handler] = [answer(status, body) for status, body, *_ in CASES]
    handlers += [
        answer(401, echo),
        answer(500, f"upstream said Bearer {KEY}"),
        raises(httpx.ConnectError(f"cannot send Authorization: Bearer {KEY}")),
        raises(httpx.ReadTimeout("slow")),
    ]
    seen = 0
    for handler in handlers:
        client = make_client(handler)
        assert KEY not in repr(client)
        with pytest.raises(LeadLexError) as info:
            client.update_contact("c1", {"notes": "x"})
        err = info.value
        for text in (str(err), repr(err), err.message, repr(err.details), repr(err.__cause__)):
            assert KEY not in text
        seen += 1
    assert seen == len(handlers)
    assert KEY not in caplog.text


@pytest.mark.parametrize("bad", ["", "wbk_abc def", "wbk_abc\n", "wbk_\x00x", "wbk_é"])
def test_malformed_keys_are_refused_without_echoing_them(bad: str) -> None:
    """A key that cannot be a header value is refused at construction, message without it."""
    with pytest.raises(ValueError, match="LEADLEX_API_KEY") as info:
        LeadLexClient(BASE, bad)
    assert not bad or bad not in str(info.value)


# ---- rate header parsing -----------------------------------------------------------------


def test_rate_headers_parse_and_junk_becomes_none() -> None:
    """Limit/Remaining/Reset parse as integers; junk, negative or fractional values are None."""
    assert RateInfo.from_headers(RATE_HEADERS, now=NOW) == RateInfo(1000, 995, 1708905600, None)
    junk = {
        "X-RateLimit-Limit": "lots",
        "X-RateLimit-Remaining": "-3",
        "X-RateLimit-Reset": "tomorrow",
        "Retry-After": "soon",
    }
    assert RateInfo.from_headers(junk, now=NOW) == RateInfo(None, None, None, None)
    odd = {"X-RateLimit-Limit": "1e400", "X-RateLimit-Remaining": "4.5", "Retry-After": "nan"}
    assert RateInfo.from_headers(odd, now=NOW) == RateInfo(None, None, None, None)
    assert RateInfo.from_headers({}, now=NOW) == RateInfo()


def test_repeated_rate_headers_take_the_first_value() -> None:
    """A header repeated by a proxy ("10, 10") is read from its first value."""
    headers = httpx.Headers([("X-RateLimit-Remaining", "7"), ("X-RateLimit-Remaining", "9")])
    assert RateInfo.from_headers(headers, now=NOW).remaining == 7


def test_reset_accepts_seconds_from_now_and_milliseconds() -> None:
    """X-RateLimit-Reset given as a delta or in epoch milliseconds is normalised to epoch s."""
    assert RateInfo.from_headers({"X-RateLimit-Reset": "45"}, now=NOW).reset == int(NOW) + 45
    ms = {"X-RateLimit-Reset": "1708905600000"}
    assert RateInfo.from_headers(ms, now=NOW).reset == 1708905600


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("0", 0.0),
        (email.utils.formatdate(NOW + 120, usegmt=True), 120.0),
        (email.utils.formatdate(NOW - 120, usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00", 0.0),
        ("-5", None),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_as_seconds_or_http_date(value: str, expected: float | None) -> None:
    """Retry-After is delta-seconds or an HTTP-date (past dates mean 0); junk is None."""
    assert RateInfo.from_headers({"Retry-After": value}, now=NOW).retry_after == expected


# ---- one client per process --------------------------------------------------------------


def test_shared_client_is_one_per_process_and_recreated_after_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """shared_client returns the same client in a process, a new one after a fork or close."""
    first = shared_client(BASE, KEY, 10.0)
    try:
        assert shared_client(BASE, KEY, 10.0) is first
        real_pid = leadlex.os.getpid()
        monkeypatch.setattr(leadlex.os, "getpid", lambda: real_pid + 1)
        after_fork = shared_client(BASE, KEY, 10.0)
        assert after_fork is not first
        assert not first.closed  # the parent's connections are left alone
        after_fork.close()
        assert shared_client(BASE, KEY, 10.0) is not after_fork
    finally:
        monkeypatch.undo()
        leadlex._forget_after_fork()
        first.close()
