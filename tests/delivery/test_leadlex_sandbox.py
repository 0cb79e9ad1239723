"""LeadLexClient (and Budget) against the LeadLex simulator on loopback: real HTTP, no mocks."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from leadlex_sandbox import READ_ONLY, READ_WRITE, SandboxConfig, SandboxServer
from worker.embedded_redis import free_port
from worker.leadlex import (
    ContactNotFoundError,
    InsufficientPermissionsError,
    InvalidKeyError,
    LeadLexClient,
    LeadLexConnectionError,
    LeadLexValidationError,
    RateLimitedError,
)
from worker.ratelimit import Budget

KEY = "wbk_delivery_test_key_0123456789abcdefghijklmnopqrstuvwxyz"
READER = "wbk_delivery_reader_0123456789abcdefghijklmnopqrstuvwxyz"
JANE = {
    "id": "123e4567-e89b-12d3-a456-426614174000",
    "full_name": "Jane Doe",
    "email": "jane@example.com",
    "notes": "Met at conference.",
}


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    """One simulator (Starter plan) for this module."""
    config = SandboxConfig(api_keys={KEY: READ_WRITE, READER: READ_ONLY}, plan="starter")
    with SandboxServer(config) as srv:
        yield srv


@pytest.fixture
def sandbox(server: SandboxServer) -> SandboxServer:
    """The simulator, emptied and back to its start-up config, with Jane seeded."""
    server.state.reset()
    server.seed([dict(JANE)])
    return server


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[LeadLexClient]:
    """A client with the write key, with a short timeout."""
    with LeadLexClient(sandbox.base_url, KEY, timeout=5.0) as c:
        yield c


def test_patch_get_search_create_round_trip(client: LeadLexClient, sandbox: SandboxServer) -> None:
    """PATCH appends notes and overwrites fields; GET, search and create parse; headers read."""
    resp = client.update_contact(JANE["id"], {"job_title": "CLO", "notes": "Promoted."})
    assert resp.status == 200
    assert resp.data["id"] == JANE["id"]
    assert resp.request_id.startswith("req_")
    assert resp.rate.limit == 100
    assert resp.rate.remaining == 99
    assert resp.rate.reset is not None
    assert resp.rate.reset % 86_400 == 0
    stored = sandbox.store.get(JANE["id"])
    assert stored is not None
    assert stored.notes == "Met at conference.\nPromoted."

    got = client.get_contact(JANE["id"])
    assert got.data["job_title"] == "CLO"
    found = client.search_contacts("jane@example.com")
    assert [c["id"] for c in found.data["contacts"]] == [JANE["id"]]
    assert found.meta["total"] == 1
    created = client.create_contact({"full_name": "Ada Lovelace", "email": "ada@example.com"})
    assert created.status == 201
    assert created.data["id"]
    assert client.last_rate is not None
    assert client.last_rate.remaining == 96  # four calls


def test_validation_and_not_found_errors(client: LeadLexClient) -> None:
    """The simulator's 400 and 404 map to their classes with field errors and request ids."""
    with pytest.raises(LeadLexValidationError) as info:
        client.update_contact(JANE["id"], {"email": "not-an-email"})
    assert "email" in info.value.field_errors
    assert info.value.request_id.startswith("req_")
    assert not info.value.retryable
    with pytest.raises(ContactNotFoundError):
        client.update_contact("00000000-0000-4000-8000-000000000000", {"job_title": "x"})


def test_auth_errors_open_the_circuit(sandbox: SandboxServer) -> None:
    """An unknown key is InvalidKeyError, a read-only key writing is InsufficientPermissions."""
    bad = LeadLexClient(sandbox.base_url, "wbk_wrong", timeout=5.0)
    with bad, pytest.raises(InvalidKeyError) as info:
        bad.get_contact(JANE["id"])
    assert info.value.opens_circuit
    assert "wbk_wrong" not in str(info.value)
    with LeadLexClient(sandbox.base_url, READER, timeout=5.0) as reader:
        assert reader.get_contact(JANE["id"]).status == 200
        with pytest.raises(InsufficientPermissionsError) as denied:
            reader.update_contact(JANE["id"], {"job_title": "x"})
    assert denied.value.opens_circuit


def test_forced_429_with_retry_after(client: LeadLexClient, sandbox: SandboxServer) -> None:
    """A 429 with Retry-After becomes RateLimitedError carrying the wait."""
    sandbox.state.configure(
        {"force_429": 1, "retry_after": True, "force_429_retry_after_seconds": 7}
    )
    with pytest.raises(RateLimitedError) as info:
        client.update_contact(JANE["id"], {"job_title": "x"})
    assert info.value.retry_after == 7.0
    assert info.value.retryable
    assert not info.value.maybe_applied


def test_dropped_answer_after_apply_is_maybe_applied(
    client: LeadLexClient, sandbox: SandboxServer
) -> None:
    """When the server applies the PATCH and drops the answer, the error says maybe_applied."""
    sandbox.state.configure({"drop_after_apply_rate": 1.0, "seed": 1})
    with pytest.raises(LeadLexConnectionError) as info:
        client.update_contact(JANE["id"], {"notes": "Once."})
    assert info.value.maybe_applied
    assert info.value.retryable
    stored = sandbox.store.get(JANE["id"])
    assert stored is not None
    assert stored.notes.endswith("\nOnce.")


def test_connection_refused_is_not_applied() -> None:
    """Nothing listening on the port: ConnectError, retryable and surely not applied."""
    c = LeadLexClient(f"http://127.0.0.1:{free_port()}", KEY, timeout=2.0)
    with c, pytest.raises(LeadLexConnectionError) as info:
        c.update_contact(JANE["id"], {"notes": "x"})
    assert not info.value.maybe_applied
    assert info.value.status is None


def test_budget_follows_the_server_count(
    client: LeadLexClient, sandbox: SandboxServer, redis_client: redis.Redis
) -> None:
    """Budget.observe after real answers makes our daily count equal the server's."""
    sandbox.state.configure({"daily": 20})
    budget = Budget(redis_client, 10, 100)
    for title in ("a", "b", "c"):
        assert budget.acquire().ok
        budget.observe(client.update_contact(JANE["id"], {"job_title": title}).rate)
    status = budget.status()
    assert (status.daily_limit, status.daily_used, status.daily_remaining) == (20, 3, 17)
    assert sandbox.state.usage()["daily_remaining"] == 17


def test_api_key_not_logged_over_real_http(
    sandbox: SandboxServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With httpx/httpcore debug logging on, no log record contains the API key."""
    caplog.set_level(logging.DEBUG)
    # Whatever an earlier test's logging set-up did to these loggers, they log here.
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "disabled", False)
        monkeypatch.setattr(logger, "propagate", True)
        caplog.set_level(logging.DEBUG, logger=name)
    with LeadLexClient(sandbox.base_url, KEY, timeout=5.0) as c:
        c.get_contact(JANE["id"])
        with pytest.raises(ContactNotFoundError):
            c.get_contact("missing")
    assert caplog.records
    assert KEY not in caplog.text
