"""The /_sandbox/ control endpoints that tests of the product drive."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from typing import Any

import httpx

from leadlex_sandbox import SandboxConfig, SandboxServer, demo_contacts
from leadlex_sandbox.config import KNOBS
from tests.sandbox.conftest import BASE_CONFIG, assert_error, configure, requests_log, seed


def test_seed_one_and_many(control: httpx.Client) -> None:
    """POST /_sandbox/contacts takes one contact or a list and returns them with ids and names."""
    one = seed(control, email="hans.mueller@example.de")
    assert one["id"]
    assert (one["first_name"], one["last_name"]) == ("Hans", "Mueller")
    many = control.post("/_sandbox/contacts", json={"contacts": demo_contacts()})
    assert many.status_code == 201
    assert [c["id"] for c in many.json()["data"]] == [c["id"] for c in demo_contacts()]
    listed = control.get("/_sandbox/contacts").json()["data"]
    assert len(listed) == 1 + len(demo_contacts())


def test_seed_is_all_or_nothing(control: httpx.Client) -> None:
    """A list with one bad record seeds nothing and names the record's index and field."""
    response = control.post(
        "/_sandbox/contacts", json=[{"full_name": "Ok One"}, {"full_name": "Bad", "colour": "red"}]
    )
    error = assert_error(response, 400, "validation_error")
    assert error["details"]["index"] == 1
    assert "colour" in error["details"]["fields"]
    assert control.get("/_sandbox/contacts").json()["data"] == []


def test_seed_rejects_duplicate_id(control: httpx.Client) -> None:
    """Seeding an id that exists answers 400 naming `id`."""
    first = seed(control, full_name="A A")
    response = control.post("/_sandbox/contacts", json={"id": first["id"], "full_name": "B B"})
    assert "id" in assert_error(response, 400, "validation_error")["details"]["fields"]


def test_get_control_contact_includes_notes(control: httpx.Client, contact: dict[str, Any]) -> None:
    """GET /_sandbox/contacts/{id} shows the full contact with notes; unknown ids are 404."""
    data = control.get(f"/_sandbox/contacts/{contact['id']}").json()["data"]
    assert data["notes"] == "Met at conference."
    assert data == contact
    assert_error(control.get("/_sandbox/contacts/nope"), 404, "not_found")


def test_request_log_entries(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """Each API request is logged with seq, ts, method, path, contact_id, status, body and flags."""
    before = time.time()
    api.patch(
        f"/v1/contacts/{contact['id']}",
        json={"notes": "hello"},
        headers={"Idempotency-Key": "idem-1"},
    )
    api.get("/v1/contacts", params={"search": "jane"})
    first, second = requests_log(control)
    assert first["seq"] == 1
    assert second["seq"] == 2
    assert before <= first["ts"] <= second["ts"] <= time.time()
    assert first["method"] == "PATCH"
    assert first["path"] == f"/v1/contacts/{contact['id']}"
    assert first["contact_id"] == contact["id"]
    assert first["status"] == 200
    assert first["body"] == {"notes": "hello"}
    assert first["idempotency_key"] == "idem-1"
    assert (first["applied"], first["dropped"]) == (True, False)
    assert first["request_id"].startswith("req_")
    assert (second["method"], second["query"], second["contact_id"]) == ("GET", "search=jane", None)
    assert second["applied"] is False
    later = control.get("/_sandbox/requests", params={"since": 1}).json()["data"]
    assert [e["seq"] for e in later] == [2]
    mine = control.get("/_sandbox/requests", params={"contact_id": contact["id"]}).json()["data"]
    assert [e["seq"] for e in mine] == [1]


def test_control_calls_are_not_logged_or_limited(api: httpx.Client, control: httpx.Client) -> None:
    """Control endpoints need no key, never spend quota and never appear in the request log."""
    configure(control, per_minute=1, daily=1)
    for _ in range(5):
        assert control.get("/_sandbox/contacts").status_code == 200
    assert requests_log(control) == []
    assert api.get("/v1/contacts").status_code == 200


def test_config_partial_update_and_get(control: httpx.Client) -> None:
    """POST /_sandbox/config changes only the given knobs; GET shows every knob and the limits."""
    data = configure(control, retry_after=True, per_minute=7)
    assert data["retry_after"] is True
    assert data["limits"] == {"per_minute": 7, "daily": 1_000_000}
    assert data["expose_notes"] is False
    assert control.get("/_sandbox/config").json()["data"] == data


def test_config_rejects_bad_knobs(control: httpx.Client) -> None:
    """Unknown knobs and bad values answer 400 naming the knob, and change nothing."""
    before = control.get("/_sandbox/config").json()["data"]
    for body, knob in (
        ({"no_such_knob": 1}, "no_such_knob"),
        ({"plan": "enterprise"}, "plan"),
        ({"per_minute": 0}, "per_minute"),
        ({"retry_after": "yes"}, "retry_after"),
        ({"api_keys": {"k": ["admin"]}}, "api_keys"),
        ({"create_status": 202}, "create_status"),
    ):
        response = control.post("/_sandbox/config", json=body)
        assert knob in assert_error(response, 400, "validation_error")["details"]["fields"]
    assert control.get("/_sandbox/config").json()["data"] == before


def test_reset_restores_config_and_empties_state(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """POST /_sandbox/reset empties contacts, log and counters and restores the start-up config."""
    configure(control, expose_notes=True, per_minute=5)
    api.get("/v1/contacts")
    assert control.post("/_sandbox/reset").json() == {"data": {"reset": True}}
    assert control.get("/_sandbox/contacts").json()["data"] == []
    assert requests_log(control) == []
    assert control.get("/_sandbox/config").json()["data"]["expose_notes"] is False
    usage = control.get("/_sandbox/limits").json()["data"]
    assert (usage["minute_used"], usage["daily_used"]) == (0, 0)


def test_reset_can_keep_config(control: httpx.Client) -> None:
    """POST /_sandbox/reset with keep_config keeps knobs changed at runtime."""
    configure(control, expose_notes=True)
    control.post("/_sandbox/reset", json={"keep_config": True})
    assert control.get("/_sandbox/config").json()["data"]["expose_notes"] is True


def test_every_config_field_has_a_check() -> None:
    """Each SandboxConfig field is validated and listed by to_dict (no knob slips through)."""
    names = {f.name for f in dataclasses.fields(SandboxConfig)}
    assert names == KNOBS
    assert names <= set(SandboxConfig().to_dict())


def test_server_api_and_second_instance() -> None:
    """A second SandboxServer gets its own port, URLs, key and state, and stops cleanly."""
    with SandboxServer(SandboxConfig(seed=1)) as other:
        assert other.base_url == other.url + "/functions/v1/api-gateway"
        assert other.url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=other.base_url, timeout=5) as client:
            response = client.get(
                "/v1/contacts", headers={"Authorization": f"Bearer {other.api_key}"}
            )
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "100"  # starter plan by default
    assert BASE_CONFIG.daily_limit == 1_000_000


def test_module_entry_point_serves(tmp_path: Any) -> None:
    """`python -m leadlex_sandbox --seed-demo` serves the demo contacts on the given port."""
    with SandboxServer() as probe:  # borrow a free port number
        port = probe.port
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leadlex_sandbox",
            "--port",
            str(port),
            "--api-key",
            "wbk_cli",
            "--plan",
            "pro",
            "--seed-demo",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        response = httpx.get(
            f"{url}/functions/v1/api-gateway/v1/contacts",
            headers={"Authorization": "Bearer wbk_cli"},
            timeout=5,
        )
        assert response.json()["meta"]["total"] == len(demo_contacts())
        assert response.headers["X-RateLimit-Limit"] == "1000"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_package_imports_no_product_code() -> None:
    """Importing leadlex_sandbox loads neither `worker` nor `webhook_app`."""
    code = (
        "import sys, leadlex_sandbox, leadlex_sandbox.__main__\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('worker', 'webhook_app')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
