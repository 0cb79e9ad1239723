"""Auth, envelope, headers and concurrency of the API gateway (reference §2-§5)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from leadlex_sandbox import SandboxServer
from tests.sandbox.conftest import (
    RO_KEY,
    RW_KEY,
    WO_KEY,
    assert_error,
    configure,
    requests_log,
    seed,
    stored,
)

REQUEST_ID = re.compile(r"^req_[0-9A-HJKMNP-TV-Z]{26}$")
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-Request-ID")


def _client(sandbox: SandboxServer, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=sandbox.base_url, headers=headers, timeout=5)


def test_missing_authorization_is_401(sandbox: SandboxServer, control: httpx.Client) -> None:
    """A request without Authorization answers 401 invalid_key."""
    with _client(sandbox, None) as client:
        assert_error(client.get("/v1/contacts"), 401, "invalid_key")


def test_unknown_or_malformed_key_is_401(sandbox: SandboxServer, control: httpx.Client) -> None:
    """An unknown key, or a non-Bearer scheme, answers 401 invalid_key."""
    with _client(sandbox, "wbk_nope") as client:
        assert_error(client.get("/v1/contacts"), 401, "invalid_key")
    with httpx.Client(base_url=sandbox.base_url, timeout=5) as client:
        response = client.get("/v1/contacts", headers={"Authorization": f"Basic {RW_KEY}"})
        assert_error(response, 401, "invalid_key")


def test_read_only_key_cannot_patch(
    sandbox: SandboxServer, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """A key without "write" gets 403 insufficient_permissions on PATCH/POST and nothing changes."""
    with _client(sandbox, RO_KEY) as client:
        patch = client.patch(f"/v1/contacts/{contact['id']}", json={"notes": "x"})
        assert_error(patch, 403, "insufficient_permissions")
        assert_error(
            client.post("/v1/contacts", json={"email": "a@b.example"}),
            403,
            "insufficient_permissions",
        )
        assert client.get(f"/v1/contacts/{contact['id']}").status_code == 200
    assert stored(control, contact["id"])["notes"] == contact["notes"]


def test_write_only_key_cannot_read(
    sandbox: SandboxServer, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """A key without "read" gets 403 on GET but may PATCH."""
    with _client(sandbox, WO_KEY) as client:
        assert_error(client.get("/v1/contacts"), 403, "insufficient_permissions")
        assert (
            client.patch(f"/v1/contacts/{contact['id']}", json={"job_title": "x"}).status_code
            == 200
        )


def test_keys_can_be_changed_at_runtime(sandbox: SandboxServer, control: httpx.Client) -> None:
    """After POST /_sandbox/config with new api_keys, the new key works and the old one is 401."""
    with _client(sandbox, "wbk_fixed_later") as client:
        assert_error(client.get("/v1/contacts"), 401, "invalid_key")
        configure(control, api_keys={"wbk_fixed_later": ["read", "write"]})
        assert client.get("/v1/contacts").status_code == 200
    with _client(sandbox, RW_KEY) as old:
        assert_error(old.get("/v1/contacts"), 401, "invalid_key")


def test_every_answer_carries_rate_and_request_headers(
    sandbox: SandboxServer, control: httpx.Client, api: httpx.Client, contact: dict[str, Any]
) -> None:
    """200, 400, 401, 403, 404 and 405 answers all carry X-RateLimit-* and X-Request-ID."""
    with _client(sandbox, None) as anonymous, _client(sandbox, RO_KEY) as read_only:
        responses = [
            api.get("/v1/contacts"),
            api.patch(f"/v1/contacts/{contact['id']}", json={"email": "bad"}),
            anonymous.get("/v1/contacts"),
            read_only.patch(f"/v1/contacts/{contact['id']}", json={"notes": "x"}),
            api.get("/v1/contacts/123e4567-e89b-12d3-a456-000000000000"),
            api.put("/v1/contacts"),
        ]
    assert [r.status_code for r in responses] == [200, 400, 401, 403, 404, 405]
    for response in responses:
        for header in RATE_HEADERS:
            assert header in response.headers, (response.status_code, header)
        assert response.headers["X-RateLimit-Limit"] == "1000000"
        assert REQUEST_ID.match(response.headers["X-Request-ID"])
        assert response.headers["Content-Type"] == "application/json"


def test_remaining_counts_down_and_reset_is_next_midnight(api: httpx.Client) -> None:
    """X-RateLimit-Remaining drops by one per call; Reset is the next 00:00 UTC in epoch seconds."""
    first = api.get("/v1/contacts").headers
    second = api.get("/v1/contacts").headers
    assert int(first["X-RateLimit-Remaining"]) == 1_000_000 - 1
    assert int(second["X-RateLimit-Remaining"]) == 1_000_000 - 2
    reset = int(second["X-RateLimit-Reset"])
    assert reset % 86_400 == 0
    assert 0 < reset - time.time() <= 86_400


def test_request_ids_are_unique(api: httpx.Client, control: httpx.Client) -> None:
    """Fifty concurrent requests get fifty distinct req_ ids, matching the request log."""
    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = list(pool.map(lambda _: api.get("/v1/contacts").headers["X-Request-ID"], range(50)))
    assert len(set(ids)) == 50
    assert {e["request_id"] for e in requests_log(control)} == set(ids)


def test_unknown_path_and_method(api: httpx.Client) -> None:
    """An unknown endpoint answers 404 not_found and a wrong method 405, both in the envelope."""
    assert_error(api.get("/v1/deals"), 404, "not_found")
    assert_error(api.post(f"/v1/contacts/{'0' * 8}", json={}), 405, "method_not_allowed")


def test_paths_outside_the_gateway_prefix_are_not_the_api(sandbox: SandboxServer) -> None:
    """The API lives only under /functions/v1/api-gateway; /v1/contacts at the root is a 404."""
    with httpx.Client(base_url=sandbox.url, timeout=5) as client:
        response = client.get("/v1/contacts", headers={"Authorization": f"Bearer {RW_KEY}"})
    assert response.status_code == 404
    assert "X-Request-ID" not in response.headers


def test_concurrent_note_appends_are_all_kept(api: httpx.Client, control: httpx.Client) -> None:
    """Forty concurrent PATCHes from eight threads append forty notes, none lost or mangled."""
    contact = seed(control, full_name="Busy Contact")

    def patch(i: int) -> int:
        return api.patch(f"/v1/contacts/{contact['id']}", json={"notes": f"n{i}"}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(patch, range(40)))
    assert statuses == [200] * 40
    lines = stored(control, contact["id"])["notes"].split("\n")
    assert sorted(lines) == sorted(f"n{i}" for i in range(40))


def test_concurrent_clients_never_exceed_the_minute_limit(
    api: httpx.Client, control: httpx.Client
) -> None:
    """Under 60 concurrent calls with per_minute=25, exactly 25 pass and the rest get 429."""
    configure(control, per_minute=25)
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda _: api.get("/v1/contacts").status_code, range(60)))
    assert statuses.count(200) == 25
    assert statuses.count(429) == 35
