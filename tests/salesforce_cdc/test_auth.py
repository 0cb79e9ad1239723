"""The OAuth token source's handling of token-endpoint answers (httpx.MockTransport)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from pull_sources.salesforce_cdc.auth import AuthError, Credentials, TokenSource, org_and_user

URL = "https://acme.my.salesforce.com"
GOOD = {
    "access_token": "00Dx!secret-token",
    "instance_url": URL,
    "id": "https://login.salesforce.com/id/00D5g000004XmPqEAK/0055g00000AbCdEAAA",
}


def _tokens(handler: Any, creds: Credentials | None = None) -> TokenSource:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return TokenSource(creds or Credentials(URL, "client-id", "client-secret"), client, 900)


def test_client_credentials_request_and_session() -> None:
    """The form goes to {instance}/services/oauth2/token; the session names org and user."""
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["form"] = dict(httpx.QueryParams(request.content.decode()))
        return httpx.Response(200, json=GOOD)

    session = _tokens(handler).current()
    assert seen["url"] == f"{URL}/services/oauth2/token"
    assert seen["form"]["grant_type"] == "client_credentials"
    assert (session.org_id, session.user_id) == ("00D5g000004XmPqEAK", "0055g00000AbCdEAAA")
    assert ("tenantid", "00D5g000004XmPqEAK") in session.metadata()


@pytest.mark.parametrize(
    ("response", "retryable", "words"),
    [
        (httpx.Response(503, text="down"), True, "503"),
        (httpx.Response(429, json={}), True, "429"),
        (httpx.Response(200, text="<html>"), True, "without JSON"),
        (httpx.Response(400, json={"error": "invalid_grant", "error_description": "expired"}),
         False, "invalid_grant"),
        (httpx.Response(200, json={**GOOD, "id": "https://x/not-an-identity"}), False, "id"),
        (httpx.Response(200, json={"instance_url": URL, "id": GOOD["id"]}), False, "access_token"),
    ],
)  # fmt: skip
def test_token_endpoint_failures_are_classified(
    response: httpx.Response, retryable: bool, words: str
) -> None:
    """5xx/429/non-JSON are retryable; refusals and malformed answers are permanent."""
    with pytest.raises(AuthError) as info:
        _tokens(lambda _request: response).current()
    assert info.value.retryable is retryable
    assert words in str(info.value)
    assert "client-secret" not in str(info.value)


def test_unreachable_endpoint_is_retryable() -> None:
    """A connection error is retryable and names only the error type."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(AuthError) as info:
        _tokens(handler).current()
    assert info.value.retryable
    assert "ConnectError" in str(info.value)


def test_unreadable_jwt_key_is_a_permanent_error(tmp_path: Path) -> None:
    """A JWT key file that is not a PEM key fails permanently without calling the endpoint."""
    key = tmp_path / "bad.key"
    key.write_text("not a key")
    creds = Credentials(URL, "client-id", username="u@x.io", jwt_key_file=key)
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json=GOOD)

    with pytest.raises(AuthError) as info:
        _tokens(handler, creds).current()
    assert not info.value.retryable
    assert calls == []


def test_identity_url_parsing() -> None:
    """`…/id/<org>/<user>` gives the org and user ids; anything else is refused."""
    assert org_and_user(GOOD["id"]) == ("00D5g000004XmPqEAK", "0055g00000AbCdEAAA")
    with pytest.raises(AuthError):
        org_and_user("https://login.salesforce.com/id/short/005")
