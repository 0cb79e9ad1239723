"""The faults the promises need: late applies, non-JSON 2xx, idempotent create, third parties."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.sandbox.conftest import RW_KEY, configure, requests_log, stored
from tests.sandbox.test_faults import _faults

OTHER_KEY = "wbk_test_third_party"


def _wait_applied(control: httpx.Client, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (entry,) = requests_log(control)
        if entry["applied"]:
            return entry
        time.sleep(0.05)
    raise AssertionError("late write never applied")


def test_late_apply_timeout_applies_after_the_client_gave_up(
    sandbox: Any, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """late_apply_seconds with answer "timeout": the client times out, the note lands later."""
    _faults(control, late_apply_seconds=1.0)
    with (
        httpx.Client(
            base_url=sandbox.base_url, headers={"Authorization": f"Bearer {RW_KEY}"}, timeout=0.3
        ) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        impatient.patch(f"/v1/contacts/{contact['id']}", json={"notes": "Late"})
    assert stored(control, contact["id"])["notes"] == "Met at conference."
    entry = _wait_applied(control)
    assert entry["late"] is True
    assert entry["applied_at"] >= entry["ts"] + 0.9
    assert stored(control, contact["id"])["notes"] == "Met at conference.\nLate"


def test_late_apply_error_answers_503_then_applies(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """With answer "error" the client gets a 503 at once, and the write is applied anyway."""
    _faults(control, late_apply_seconds=0.5, late_apply_answer="error")
    before = stored(control, contact["id"])["updated_date"]
    response = api.patch(f"/v1/contacts/{contact['id']}", json={"job_title": "CLO"})
    assert response.status_code == 503
    assert stored(control, contact["id"])["job_title"] == "General Counsel"
    _wait_applied(control)
    after = stored(control, contact["id"])
    assert after["job_title"] == "CLO"
    assert after["updated_date"] > before


def test_late_apply_drop_closes_the_connection_then_applies(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """With answer "drop" the connection closes unanswered, and the write is applied later."""
    _faults(control, late_apply_seconds=0.3, late_apply_answer="drop")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "Dropped"})
    _wait_applied(control)
    assert stored(control, contact["id"])["notes"].endswith("\nDropped")


def test_late_apply_writes_limits_the_fault_to_the_next_n_writes(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """late_apply_writes=1 delays only the next write; reads are never delayed."""
    _faults(control, late_apply_seconds=0.3, late_apply_answer="error", late_apply_writes=1)
    assert api.get(f"/v1/contacts/{contact['id']}").status_code == 200
    assert api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "a"}).status_code == 503
    assert api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "b"}).status_code == 200
    time.sleep(0.6)
    assert stored(control, contact["id"])["notes"] == "Met at conference.\nb\na"
    assert [e["late"] for e in requests_log(control)] == [False, True, False]


def test_late_write_whose_key_was_applied_meanwhile_is_a_replay(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """With honoured keys, a retry that lands first makes the late original a no-op replay."""
    configure(control, honor_idempotency_key=True)
    _faults(control, late_apply_seconds=0.5, late_apply_answer="error", late_apply_writes=1)
    url, headers = f"/v1/contacts/{contact['id']}", {"Idempotency-Key": "k-late"}
    assert api.patch(url, json={"notes": "N"}, headers=headers).status_code == 503
    assert api.patch(url, json={"notes": "N"}, headers=headers).status_code == 200
    time.sleep(0.8)
    assert stored(control, contact["id"])["notes"] == "Met at conference.\nN"
    assert [(e["applied"], e["replayed"]) for e in requests_log(control)] == [
        (False, True),
        (True, False),
    ]


def test_non_json_answer_applies_and_answers_garbage(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """non_json_answer_rate=1 applies the write and answers 200 with a body that is not JSON."""
    _faults(control, non_json_answer_rate=1.0)
    response = api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "G"})
    assert response.status_code == 200
    assert response.content == b"OK (applied)"
    assert stored(control, contact["id"])["notes"].endswith("\nG")
    assert requests_log(control)[0]["non_json"] is True


def test_honored_key_on_create_replays_the_first_contact(
    api: httpx.Client, control: httpx.Client
) -> None:
    """With honor_idempotency_key a repeated POST /v1/contacts returns the first contact."""
    configure(control, honor_idempotency_key=True, duplicate_email="allow")
    headers = {"Idempotency-Key": "create-1"}
    body = {"full_name": "Ida Create", "email": "ida@example.com"}
    first = api.post("/v1/contacts", json=body, headers=headers)
    again = api.post("/v1/contacts", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["data"]["id"] == again.json()["data"]["id"]
    assert len(control.get("/_sandbox/contacts").json()["data"]) == 1


def test_create_key_is_ignored_by_default(api: httpx.Client, control: httpx.Client) -> None:
    """By default a repeated POST with the same key creates a second contact."""
    configure(control, duplicate_email="allow")
    headers = {"Idempotency-Key": "create-2"}
    body = {"full_name": "Ida Twice", "email": "ida2@example.com"}
    ids = {api.post("/v1/contacts", json=body, headers=headers).json()["data"]["id"] for _ in "ab"}
    assert len(ids) == 2


def test_third_party_key_edits_change_updated_date(
    sandbox: Any, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """A second API key edits through the normal API; every write moves updated_date."""
    configure(control, api_keys={RW_KEY: ["read", "write"], OTHER_KEY: ["read", "write"]})
    seen = [stored(control, contact["id"])["updated_date"]]
    with httpx.Client(
        base_url=sandbox.base_url, headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=5
    ) as other:
        for value in ("Partner", "Partner"):  # the same value twice still counts as a write
            assert other.patch(
                f"/v1/contacts/{contact['id']}", json={"job_title": value}
            ).is_success
            seen.append(stored(control, contact["id"])["updated_date"])
    assert seen == sorted(set(seen))
    assert len(seen) == 3


def test_error_methods_limits_injected_5xx_to_those_methods(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """error_methods=["PATCH"] fails every PATCH while reads still answer 200."""
    _faults(control, error_rate_5xx=1.0, error_methods=["PATCH"])
    assert api.get(f"/v1/contacts/{contact['id']}").status_code == 200
    assert api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "x"}).status_code >= 500
    assert stored(control, contact["id"])["notes"] == "Met at conference."
