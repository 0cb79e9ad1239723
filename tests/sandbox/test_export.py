"""The simulator's GET /v1/contacts/export (reference §7.8) and its seeded population."""

from __future__ import annotations

import csv
import io

import httpx

from leadlex_sandbox.export import DEFAULT_FIELDS
from leadlex_sandbox.population import TRAPS, crm_export_csv, population
from tests.sandbox.conftest import assert_error, configure, requests_log, seed


def _rows(response: httpx.Response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.text)))


def test_export_is_csv_with_the_documented_default_columns(
    api: httpx.Client, control: httpx.Client
) -> None:
    """The export answers text/csv as an attachment, header first, tags comma-joined."""
    one = seed(control, full_name="Jane Doe", email="jane@example.com", tags=["a", "b"])
    seed(control, full_name="Hans Mueller", email="hans@example.de")
    response = api.get("/v1/contacts/export", headers={"Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="contacts-export.csv"' in response.headers["content-disposition"]
    assert response.text.splitlines()[0] == ",".join(DEFAULT_FIELDS)
    rows = _rows(response)
    assert [r["full_name"] for r in rows] == ["Jane Doe", "Hans Mueller"]
    assert rows[0]["id"] == one["id"]
    assert rows[0]["tags"] == "a,b"
    assert '"a,b"' in response.text
    assert "X-RateLimit-Remaining" in response.headers


def test_export_limit_fields_and_bad_input(api: httpx.Client, control: httpx.Client) -> None:
    """`limit` caps the rows, `fields` picks the columns, a bad value is a 400 naming it."""
    for i in range(5):
        seed(control, full_name=f"P {i}", email=f"p{i}@x.test")
    response = api.get("/v1/contacts/export", params={"limit": 2, "fields": "id,email"})
    assert response.text.splitlines()[0] == "id,email"
    assert len(_rows(response)) == 2
    error = assert_error(
        api.get("/v1/contacts/export", params={"limit": 50_001}), 400, "validation_error"
    )
    assert "limit" in error["details"]["fields"]
    error = assert_error(
        api.get("/v1/contacts/export", params={"fields": "id,secret"}), 400, "validation_error"
    )
    assert "fields" in error["details"]["fields"]


def test_export_has_its_own_hourly_limit(api: httpx.Client, control: httpx.Client) -> None:
    """The 11th export within the hour is refused 429 while the list still answers."""
    configure(control, per_minute=100, daily=1000)
    for _ in range(10):
        assert api.get("/v1/contacts/export").status_code == 200
    refused = api.get("/v1/contacts/export")
    error = assert_error(refused, 429, "rate_limited")
    assert "Export limit" in error["message"]
    assert api.get("/v1/contacts").status_code == 200
    statuses = [e["status"] for e in requests_log(control)]
    assert statuses.count(429) == 1
    assert len(statuses) == 12


def test_list_pages_through_every_contact(api: httpx.Client, control: httpx.Client) -> None:
    """per_page=100 pages cover every contact once; meta.total says how many there are."""
    control.post(
        "/_sandbox/contacts", json={"contacts": [{"full_name": f"N {i}"} for i in range(230)]}
    )
    configure(control, per_minute=100)
    ids: list[str] = []
    for page in (1, 2, 3):
        body = api.get("/v1/contacts", params={"page": page, "per_page": 100}).json()
        assert body["meta"]["total"] == 230
        ids += [c["id"] for c in body["data"]["contacts"]]
    assert len(ids) == len(set(ids)) == 230


def test_population_has_every_trap_and_realistic_spellings() -> None:
    """The seeded population carries each trap and varied email/phone spellings."""
    pop = population(500, seed=3)
    assert {k: len(v) for k, v in pop.traps.items() if k != "crm_duplicate"} == {
        k: n for k, n in TRAPS.items() if k != "crm_duplicate"
    }
    emails = [c["email"] for c in pop.leadlex]
    assert any(e != e.strip() for e in emails)
    assert any(e != e.lower() for e in emails)
    assert any(c["phone"].startswith("(") for c in pop.leadlex)
    header = crm_export_csv(pop, "salesforce").splitlines()[0]
    assert header.startswith("Contact ID,")
    assert population(500, seed=3).expected == pop.expected
