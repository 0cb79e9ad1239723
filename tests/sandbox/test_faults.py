"""Fault injection and the Idempotency-Key knob: what a resilient client must survive."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.sandbox.conftest import assert_error, configure, requests_log, stored


def _faults(control: httpx.Client, **knobs: Any) -> dict[str, Any]:
    response = control.post("/_sandbox/faults", json=knobs)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_force_429_answers_the_next_n_requests(api: httpx.Client, control: httpx.Client) -> None:
    """force_429=2 makes exactly the next two calls 429 rate_limited, then calls pass again."""
    _faults(control, force_429=2)
    statuses = [api.get("/v1/contacts").status_code for _ in range(3)]
    assert statuses == [429, 429, 200]
    assert control.get("/_sandbox/faults").json()["data"]["force_429"] == 0


def test_force_429_retry_after(api: httpx.Client, control: httpx.Client) -> None:
    """A forced 429 has no Retry-After by default and `Retry-After: S` once S is set."""
    _faults(control, force_429=1)
    plain = api.get("/v1/contacts")
    assert_error(plain, 429, "rate_limited")
    assert "Retry-After" not in plain.headers
    assert "X-RateLimit-Remaining" in plain.headers
    _faults(control, force_429=1, force_429_retry_after_seconds=7)
    response = api.get("/v1/contacts")
    assert_error(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "7"


def test_error_rate_5xx_answers_without_applying(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """error_rate_5xx=1 answers 500/502/503 in the envelope and the PATCH is not applied."""
    _faults(control, error_rate_5xx=1.0)
    responses = [
        api.patch(f"/v1/contacts/{contact['id']}", json={"notes": f"n{i}"}) for i in range(6)
    ]
    for response in responses:
        assert response.status_code in (500, 502, 503)
        assert set(response.json()["error"]) == {"code", "message"}
        assert "X-Request-ID" in response.headers
    assert stored(control, contact["id"])["notes"] == contact["notes"]
    assert not any(e["applied"] for e in requests_log(control))


def test_error_statuses_knob(api: httpx.Client, control: httpx.Client) -> None:
    """error_statuses narrows the injected 5xx to the listed statuses."""
    _faults(control, error_rate_5xx=1.0, error_statuses=[503])
    response = api.get("/v1/contacts")
    assert_error(response, 503, "service_unavailable")


def test_error_rate_is_seeded(api: httpx.Client, control: httpx.Client) -> None:
    """With the same seed, the same sequence of requests meets the same faults."""

    def run() -> list[int]:
        control.post("/_sandbox/reset")
        _faults(control, error_rate_5xx=0.5, seed=42)
        return [api.get("/v1/contacts").status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert 200 in first
    assert any(s >= 500 for s in first)


def test_drop_after_apply_applies_but_client_sees_transport_error(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """drop_after_apply_rate=1 applies the PATCH, then closes the connection unanswered."""
    _faults(control, drop_after_apply_rate=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "Promoted"})
    assert stored(control, contact["id"])["notes"] == "Met at conference.\nPromoted"
    (entry,) = requests_log(control)
    assert (entry["status"], entry["applied"], entry["dropped"]) == (200, True, True)


def test_drop_does_not_touch_reads_or_rejected_writes(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """Only applied writes are dropped: a GET and an invalid PATCH are answered normally."""
    _faults(control, drop_after_apply_rate=1.0)
    assert api.get(f"/v1/contacts/{contact['id']}").status_code == 200
    bad = api.patch(f"/v1/contacts/{contact['id']}", json={"email": "bad"})
    assert_error(bad, 400, "validation_error")


def test_blind_retry_after_a_drop_appends_twice(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """Idempotency-Key is ignored on PATCH by default: retrying a dropped note appends it twice."""
    _faults(control, drop_after_apply_rate=1.0)
    headers = {"Idempotency-Key": "3f1c6a5e-0d7b-4c1e-9a55-1b2c3d4e5f60"}
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "N"}, headers=headers)
    _faults(control, drop_after_apply_rate=0.0)
    assert (
        api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "N"}, headers=headers).status_code
        == 200
    )
    assert stored(control, contact["id"])["notes"] == "Met at conference.\nN\nN"
    assert [e["idempotency_key"] for e in requests_log(control)] == [headers["Idempotency-Key"]] * 2


def test_honored_idempotency_key_replays(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """With honor_idempotency_key, a repeated PATCH replays the first answer without appending."""
    configure(control, honor_idempotency_key=True)
    headers = {"Idempotency-Key": "k-1"}
    url = f"/v1/contacts/{contact['id']}"
    first = api.patch(url, json={"notes": "N"}, headers=headers)
    again = api.patch(url, json={"notes": "N"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert stored(control, contact["id"])["notes"] == "Met at conference.\nN"
    assert [(e["applied"], e["replayed"]) for e in requests_log(control)] == [
        (True, False),
        (False, True),
    ]
    conflict = api.patch(url, json={"notes": "other"}, headers=headers)
    assert_error(conflict, 409, "idempotency_conflict")


def test_honored_key_makes_a_retry_after_a_drop_safe(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """With honor_idempotency_key, a retried dropped PATCH is replayed: the note lands once."""
    configure(control, honor_idempotency_key=True)
    _faults(control, drop_after_apply_rate=1.0)
    url = f"/v1/contacts/{contact['id']}"
    headers = {"Idempotency-Key": "k-drop"}
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.patch(url, json={"notes": "N"}, headers=headers)
    _faults(control, drop_after_apply_rate=0.0)
    retry = api.patch(url, json={"notes": "N"}, headers=headers)
    assert retry.status_code == 200
    assert stored(control, contact["id"])["notes"] == "Met at conference.\nN"


def test_latency_knob(api: httpx.Client, control: httpx.Client) -> None:
    """latency_ms delays every API answer by at least that long."""
    _faults(control, latency_ms=150)
    started = time.monotonic()
    assert api.get("/v1/contacts").status_code == 200
    assert time.monotonic() - started >= 0.15


def test_faults_endpoint_rejects_other_knobs(control: httpx.Client) -> None:
    """POST /_sandbox/faults only takes fault knobs and checks ranges, naming the bad knob."""
    for body, knob in (
        ({"retry_after": True}, "retry_after"),
        ({"error_rate_5xx": 1.5}, "error_rate_5xx"),
        ({"error_statuses": [404]}, "error_statuses"),
        ({"force_429": -1}, "force_429"),
    ):
        response = control.post("/_sandbox/faults", json=body)
        assert knob in assert_error(response, 400, "validation_error")["details"]["fields"]
