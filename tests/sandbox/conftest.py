"""Fixtures: one real SandboxServer on a loopback port per session, reset before every test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from leadlex_sandbox import READ_ONLY, READ_WRITE, SandboxConfig, SandboxServer

RW_KEY = "wbk_test_read_write"
RO_KEY = "wbk_test_read_only"
WO_KEY = "wbk_test_write_only"

# Generous limits so that only the tests about limits ever meet one (they lower them).
BASE_CONFIG = SandboxConfig(
    api_keys={RW_KEY: READ_WRITE, RO_KEY: READ_ONLY, WO_KEY: frozenset({"write"})},
    per_minute=100_000,
    daily=1_000_000,
    seed=1234,
)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """The simulator, started once for the session on a free loopback port."""
    with SandboxServer(BASE_CONFIG) as server:
        yield server


@pytest.fixture(scope="session")
def _control_client(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    """One client on the control endpoints for the session (building clients is slow)."""
    with httpx.Client(base_url=sandbox.url, timeout=5) as client:
        yield client


@pytest.fixture(scope="session")
def _api_client(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    """One client on the LeadLex API with the read+write key for the session."""
    headers = {"Authorization": f"Bearer {RW_KEY}"}
    with httpx.Client(base_url=sandbox.base_url, headers=headers, timeout=5) as client:
        yield client


@pytest.fixture
def control(_control_client: httpx.Client) -> httpx.Client:
    """A client on the control endpoints; the sandbox is reset (config included) first."""
    _control_client.post("/_sandbox/reset").raise_for_status()
    return _control_client


@pytest.fixture
def api(_api_client: httpx.Client, control: httpx.Client) -> httpx.Client:
    """A client on the LeadLex API with the read+write key, on a freshly reset sandbox."""
    return _api_client


@pytest.fixture
def contact(control: httpx.Client) -> dict[str, Any]:
    """One seeded contact with notes, as the control endpoint returns it."""
    return seed(
        control,
        full_name="Jane Doe",
        email="jane@example.com",
        phone="+1 415 555 0142",
        job_title="General Counsel",
        company_name="Acme Legal",
        notes="Met at conference.",
    )


def seed(control: httpx.Client, **fields: Any) -> dict[str, Any]:
    """Seed one contact through the control endpoint and return it."""
    response = control.post("/_sandbox/contacts", json=fields)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def configure(control: httpx.Client, **knobs: Any) -> dict[str, Any]:
    """Change knobs through the control endpoint and return the whole config."""
    response = control.post("/_sandbox/config", json=knobs)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def stored(control: httpx.Client, contact_id: str) -> dict[str, Any]:
    """The full stored contact (notes included)."""
    response = control.get(f"/_sandbox/contacts/{contact_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def requests_log(control: httpx.Client) -> list[dict[str, Any]]:
    """The sandbox's log of API requests."""
    data: list[dict[str, Any]] = control.get("/_sandbox/requests").json()["data"]
    return data


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is a LeadLex error with this status and code; returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert set(error) <= {"code", "message", "details"}
    return error
