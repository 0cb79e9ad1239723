"""Conformance of the /v1/contacts endpoints with reference/leadlex-api.md §6-§8."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.sandbox.conftest import assert_error, configure, seed, stored

ISO_MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LIST_FIELDS = {
    "id",
    "full_name",
    "email",
    "phone",
    "job_title",
    "company_name",
    "linkedin_url",
    "created_at",
    "updated_date",
}


# ---- PATCH /v1/contacts/{id} (§8)


def test_patch_appends_notes_with_newline(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """Two PATCHes with notes append two lines joined by a single newline."""
    for note in ("Promoted to CLO in Q1 2026", "Moved to Berlin"):
        assert api.patch(f"/v1/contacts/{contact['id']}", json={"notes": note}).status_code == 200
    assert stored(control, contact["id"])["notes"] == (
        "Met at conference.\nPromoted to CLO in Q1 2026\nMoved to Berlin"
    )


def test_patch_first_note_has_no_separator(api: httpx.Client, control: httpx.Client) -> None:
    """Appending to empty notes stores the note alone, with no leading newline."""
    contact = seed(control, full_name="No Notes", email="nn@example.com")
    api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "first"}).raise_for_status()
    api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "second"}).raise_for_status()
    assert stored(control, contact["id"])["notes"] == "first\nsecond"


def test_patch_overwrites_other_fields_and_leaves_omitted_ones(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """Sent fields are overwritten, omitted fields stay, and the answer shows the new values."""
    body = {
        "email": "jane.doe@acme.example",
        "phone": "+44 20 7946 0958",
        "job_title": "Chief Legal Officer",
        "company_name": "Acme Legal GmbH",
        "linkedin_url": "https://www.linkedin.com/in/jane-doe",
    }
    response = api.patch(f"/v1/contacts/{contact['id']}", json=body)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["id"] == contact["id"]
    for name, value in body.items():
        assert data[name] == value
    after = stored(control, contact["id"])
    assert {k: after[k] for k in body} == body
    assert after["full_name"] == "Jane Doe"
    assert after["notes"] == "Met at conference."


def test_patch_full_name_rederives_first_and_last(
    api: httpx.Client, contact: dict[str, Any]
) -> None:
    """A new full_name re-derives first_name/last_name, splitting on the last space."""
    response = api.patch(
        f"/v1/contacts/{contact['id']}", json={"full_name": "Jean-Claude van Damme"}
    )
    data = response.json()["data"]
    assert (data["full_name"], data["first_name"], data["last_name"]) == (
        "Jean-Claude van Damme",
        "Jean-Claude van",
        "Damme",
    )


def test_patch_moves_updated_date(api: httpx.Client, contact: dict[str, Any]) -> None:
    """Each PATCH sets updated_date to a later ISO 8601 UTC time with microseconds."""
    first = api.patch(f"/v1/contacts/{contact['id']}", json={"job_title": "A"}).json()["data"]
    second = api.patch(f"/v1/contacts/{contact['id']}", json={"job_title": "B"}).json()["data"]
    assert ISO_MICROS.match(first["updated_date"])
    assert ISO_MICROS.match(second["updated_date"])
    assert contact["updated_date"] < first["updated_date"] < second["updated_date"]
    moment = datetime.fromisoformat(second["updated_date"])
    assert abs(moment - datetime.now(UTC)) < timedelta(seconds=30)


def test_patch_answer_hides_notes_by_default(api: httpx.Client, contact: dict[str, Any]) -> None:
    """notes is write-only: neither the PATCH answer nor GET shows it unless expose_notes."""
    patched = api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "x"}).json()["data"]
    fetched = api.get(f"/v1/contacts/{contact['id']}").json()["data"]
    assert "notes" not in patched
    assert "notes" not in fetched


def test_expose_notes_shows_notes(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """With expose_notes the PATCH answer and GET carry the joined notes string."""
    configure(control, expose_notes=True)
    patched = api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "Promoted"}).json()["data"]
    fetched = api.get(f"/v1/contacts/{contact['id']}").json()["data"]
    assert patched["notes"] == fetched["notes"] == "Met at conference.\nPromoted"


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"email": "not-an-email"}, "email", "Invalid email format"),
        ({"email": "jane@@example.com"}, "email", "Invalid email format"),
        ({"phone": "415 555 0142"}, "phone", "country code"),
        ({"phone": "+1 55"}, "phone", "Invalid phone number format"),
        ({"phone": "+1 555 123 4567 ext 9"}, "phone", "Invalid phone number format"),
        ({"linkedin_url": "https://example.com/in/jane"}, "linkedin_url", "linkedin.com"),
        ({"linkedin_url": "ftp://linkedin.com/in/jane"}, "linkedin_url", "LinkedIn"),
        ({"linkedin_url": "https://evil-linkedin.com/in/x"}, "linkedin_url", "linkedin.com"),
        ({"job_title": "x" * 256}, "job_title", "255"),
        ({"notes": "n" * 10_001}, "notes", "10000"),
        ({"job_title": None}, "job_title", "null"),
        ({"job_title": 42}, "job_title", "string"),
        ({"company_name": ""}, "company_name", "empty"),
        ({"first_name": "Jane"}, "first_name", "Unknown field"),
        ({"company": "Acme"}, "company", "Unknown field"),
        ({}, "body", "At least one field"),
    ],
)
def test_patch_validation_names_the_field(
    api: httpx.Client,
    control: httpx.Client,
    contact: dict[str, Any],
    body: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    """An invalid PATCH answers 400 validation_error naming the field and changes nothing."""
    response = api.patch(f"/v1/contacts/{contact['id']}", json=body)
    error = assert_error(response, 400, "validation_error")
    assert error["message"] == "Invalid request parameters"
    assert reason in error["details"]["fields"][field]
    assert stored(control, contact["id"]) == contact


def test_patch_accepts_valid_edge_formats(api: httpx.Client, contact: dict[str, Any]) -> None:
    """The docs' own phone example, a 255-char title and a regional LinkedIn host are valid."""
    for body in (
        {"phone": "+1-555-9999"},
        {"phone": "+49 (30) 901820"},
        {"job_title": "x" * 255},
        {"notes": "n" * 10_000},
        {"linkedin_url": "http://de.linkedin.com/in/hans"},
        {"email": "first.last+tag@sub.example.co.uk"},
    ):
        assert api.patch(f"/v1/contacts/{contact['id']}", json=body).status_code == 200, body


def test_patch_reports_every_bad_field_at_once(api: httpx.Client, contact: dict[str, Any]) -> None:
    """details.fields lists all invalid fields of one body, not only the first."""
    response = api.patch(
        f"/v1/contacts/{contact['id']}", json={"email": "x", "phone": "1", "extra": "y"}
    )
    fields = assert_error(response, 400, "validation_error")["details"]["fields"]
    assert set(fields) == {"email", "phone", "extra"}


def test_patch_rejects_bad_json_and_wrong_content_type(
    api: httpx.Client, contact: dict[str, Any]
) -> None:
    """A body that is not JSON, not an object, or not sent as application/json is a 400."""
    url = f"/v1/contacts/{contact['id']}"
    json_header = {"Content-Type": "application/json"}
    for response in (
        api.patch(url, content=b"{not json", headers=json_header),
        api.patch(url, content=b'["notes"]', headers=json_header),
        api.patch(url, content=b'{"notes": "x"}', headers={"Content-Type": "text/plain"}),
    ):
        assert "body" in assert_error(response, 400, "validation_error")["details"]["fields"]


def test_lenient_knobs_clear_and_ignore(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """With the reject_* knobs off, null and "" clear a field and unknown fields are ignored."""
    configure(control, reject_null=False, reject_empty_string=False, reject_unknown_fields=False)
    response = api.patch(
        f"/v1/contacts/{contact['id']}",
        json={"job_title": None, "company_name": "", "first_name": "X", "notes": ""},
    )
    assert response.status_code == 200, response.text
    after = stored(control, contact["id"])
    assert after["job_title"] is None
    assert after["company_name"] is None
    assert after["first_name"] == "Jane"
    assert after["notes"] == "Met at conference."


def test_blank_full_name_is_rejected_even_when_lenient(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """full_name can never be blanked: a contact without a name is a validation error."""
    configure(control, reject_null=False, reject_empty_string=False)
    for value in (None, "  "):
        response = api.patch(f"/v1/contacts/{contact['id']}", json={"full_name": value})
        assert "full_name" in assert_error(response, 400, "validation_error")["details"]["fields"]


def test_empty_body_allowed_by_knob(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """With reject_empty_body off, PATCH {} answers 200 and changes no field."""
    configure(control, reject_empty_body=False)
    response = api.patch(f"/v1/contacts/{contact['id']}", json={})
    assert response.status_code == 200
    assert stored(control, contact["id"])["job_title"] == contact["job_title"]


def test_patch_unknown_contact_is_404(api: httpx.Client) -> None:
    """PATCH of an id that does not exist (or is not a UUID) answers 404 not_found."""
    for contact_id in ("123e4567-e89b-12d3-a456-000000000000", "abc-123"):
        response = api.patch(f"/v1/contacts/{contact_id}", json={"job_title": "x"})
        assert_error(response, 404, "not_found")


# ---- GET /v1/contacts/{id} (§7.2)


def test_get_contact_shape(api: httpx.Client, contact: dict[str, Any]) -> None:
    """GET returns the contact with first/last/full names, `company` and `created_date`."""
    response = api.get(f"/v1/contacts/{contact['id']}")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["id"] == contact["id"]
    assert (data["first_name"], data["last_name"]) == ("Jane", "Doe")
    assert data["company"] == "Acme Legal"
    assert "company_name" not in data
    assert data["created_date"] == contact["created_date"]


def test_get_contact_include(api: httpx.Client, contact: dict[str, Any]) -> None:
    """include=notes,tasks,deals (or *) adds the three arrays; an unknown include is a 400."""
    data = api.get(f"/v1/contacts/{contact['id']}", params={"include": "*"}).json()["data"]
    assert data["recent_notes"] == data["open_tasks"] == data["open_deals"] == []
    only = api.get(f"/v1/contacts/{contact['id']}", params={"include": "deals"}).json()["data"]
    assert "open_deals" in only
    assert "recent_notes" not in only
    bad = api.get(f"/v1/contacts/{contact['id']}", params={"include": "emails"})
    assert "include" in assert_error(bad, 400, "validation_error")["details"]["fields"]


def test_get_unknown_contact_is_404(api: httpx.Client) -> None:
    """GET of an unknown id answers 404 not_found in the envelope."""
    assert_error(api.get("/v1/contacts/123e4567-e89b-12d3-a456-000000000000"), 404, "not_found")


# ---- GET /v1/contacts (§7.1)


def test_list_shape_and_meta(api: httpx.Client, control: httpx.Client) -> None:
    """The list answers data.contacts[] with the documented fields and meta{page,per_page,total}."""
    for i in range(3):
        seed(control, full_name=f"Person {i}", email=f"p{i}@example.com")
    body = api.get("/v1/contacts", params={"per_page": 2, "page": 2}).json()
    assert body["meta"] == {"page": 2, "per_page": 2, "total": 3}
    assert len(body["data"]["contacts"]) == 1
    assert set(body["data"]["contacts"][0]) == LIST_FIELDS
    default = api.get("/v1/contacts").json()["meta"]
    assert default == {"page": 1, "per_page": 50, "total": 3}


def test_list_search_is_partial_and_case_insensitive(
    api: httpx.Client, control: httpx.Client
) -> None:
    """search matches part of full_name or email, ignoring case."""
    seed(control, full_name="Hans Mueller", email="hans@kanzlei.example")
    seed(control, full_name="Jane Doe", email="jane@MUELLER-legal.example")
    seed(control, full_name="Priya Raman", email="priya@example.in")
    names = [
        c["full_name"]
        for c in api.get("/v1/contacts", params={"search": "mUeLl"}).json()["data"]["contacts"]
    ]
    assert names == ["Hans Mueller", "Jane Doe"]
    assert api.get("/v1/contacts", params={"search": "zzz"}).json()["meta"]["total"] == 0


def test_list_sort(api: httpx.Client, control: httpx.Client) -> None:
    """sort=full_name / -full_name / created_at order the list; an unknown sort is a 400."""
    for name in ("Bea", "Cem", "Ada"):
        seed(control, full_name=name)

    def names(sort: str) -> list[str]:
        contacts = api.get("/v1/contacts", params={"sort": sort}).json()["data"]["contacts"]
        return [c["full_name"] for c in contacts]

    assert names("full_name") == ["Ada", "Bea", "Cem"]
    assert names("-full_name") == ["Cem", "Bea", "Ada"]
    assert names("created_at") == ["Bea", "Cem", "Ada"]
    assert_error(api.get("/v1/contacts", params={"sort": "email"}), 400, "validation_error")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"per_page": 101}, "per_page"),
        ({"per_page": 0}, "per_page"),
        ({"page": 0}, "page"),
        ({"page": "x"}, "page"),
        ({"created_after": "yesterday"}, "created_after"),
    ],
)
def test_list_rejects_bad_paging(api: httpx.Client, params: dict[str, Any], field: str) -> None:
    """per_page over 100 (not clamped), page < 1 and bad timestamps answer 400 naming the param."""
    response = api.get("/v1/contacts", params=params)
    assert field in assert_error(response, 400, "validation_error")["details"]["fields"]


# ---- POST /v1/contacts (§7.3)


def test_create_returns_201_and_derives_names(api: httpx.Client) -> None:
    """POST answers 201 with id, names, priority and created_date; "Last, First" is understood."""
    response = api.post("/v1/contacts", json={"full_name": "Doe, Jane", "priority": "high"})
    assert response.status_code == 201
    data = response.json()["data"]
    assert set(data) == {
        "id",
        "first_name",
        "last_name",
        "full_name",
        "email",
        "priority",
        "created_date",
    }
    assert (data["first_name"], data["last_name"]) == ("Jane", "Doe")
    assert data["priority"] == 1
    assert ISO_MICROS.match(data["created_date"])


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"first_name": "Ada", "last_name": "Lovelace"}, ("Ada Lovelace", "Ada", "Lovelace")),
        ({"email": "hans.mueller@example.de"}, ("Hans Mueller", "Hans", "Mueller")),
        (
            {"full_name": "Jean-Claude van Damme"},
            ("Jean-Claude van Damme", "Jean-Claude van", "Damme"),
        ),
        ({"last_name": "Solo"}, ("Solo", "", "Solo")),
    ],
)
def test_create_name_derivation(
    api: httpx.Client, body: dict[str, Any], names: tuple[str, str, str]
) -> None:
    """Missing name parts are derived from the others or from the email's local part."""
    data = api.post("/v1/contacts", json=body).json()["data"]
    assert (data["full_name"], data["first_name"], data["last_name"]) == names


def test_create_needs_a_name_or_email(api: httpx.Client) -> None:
    """A body without first_name, last_name, full_name or email answers 400."""
    response = api.post("/v1/contacts", json={"job_title": "Counsel", "phone": "+1 415 555 0100"})
    assert "full_name" in assert_error(response, 400, "validation_error")["details"]["fields"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"full_name": "A B", "email": "nope"}, "email"),
        ({"full_name": "A B", "phone": "0151 1234567"}, "phone"),
        ({"full_name": "A B", "priority": "urgent"}, "priority"),
        ({"full_name": "A B", "tags": "vip"}, "tags"),
        ({"full_name": "A B", "custom_fields": []}, "custom_fields"),
        ({"full_name": "A B", "related_company_id": "acme"}, "related_company_id"),
        ({"full_name": "A B", "notes": "hello"}, "notes"),
        ({"full_name": "A B", "company": "X", "company_name": "Y"}, "company_name"),
        ({"full_name": None, "email": "a@example.com"}, "full_name"),
    ],
)
def test_create_validation(
    api: httpx.Client, control: httpx.Client, body: dict[str, Any], field: str
) -> None:
    """An invalid create answers 400 naming the field and stores nothing."""
    response = api.post("/v1/contacts", json=body)
    assert field in assert_error(response, 400, "validation_error")["details"]["fields"]
    assert control.get("/_sandbox/contacts").json()["data"] == []


def test_create_accepts_both_company_spellings(api: httpx.Client, control: httpx.Client) -> None:
    """`company` (create docs) and `company_name` (quickstart) both set the company."""
    a = api.post("/v1/contacts", json={"full_name": "A A", "company": "Acme"}).json()["data"]
    b = api.post("/v1/contacts", json={"full_name": "B B", "company_name": "Beta"}).json()["data"]
    assert stored(control, a["id"])["company_name"] == "Acme"
    assert stored(control, b["id"])["company_name"] == "Beta"


def test_create_created_date_rules(api: httpx.Client) -> None:
    """created_date is kept when valid and recent, else replaced by now (never null)."""
    recent = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kept = api.post("/v1/contacts", json={"full_name": "A A", "created_date": recent}).json()
    assert kept["data"]["created_date"] == recent
    for bad in ("2001-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "not a date"):
        data = api.post("/v1/contacts", json={"full_name": "B B", "created_date": bad}).json()
        moment = datetime.fromisoformat(data["data"]["created_date"])
        assert abs(moment - datetime.now(UTC)) < timedelta(seconds=30)


def test_create_duplicate_email(api: httpx.Client, control: httpx.Client) -> None:
    """A second contact with a known email answers 409 duplicate_contact, unless allowed."""
    first = api.post("/v1/contacts", json={"email": "dup@example.com"}).json()["data"]
    response = api.post("/v1/contacts", json={"email": "DUP@example.com"})
    assert assert_error(response, 409, "duplicate_contact")["details"]["existing_id"] == first["id"]
    configure(control, duplicate_email="allow", create_status=200)
    assert api.post("/v1/contacts", json={"email": "dup@example.com"}).status_code == 200


# ---- DELETE /v1/contacts/{id} (§7.4)


def test_delete_contact(api: httpx.Client, contact: dict[str, Any]) -> None:
    """DELETE answers {deleted: true, id} and the contact is gone (404 afterwards)."""
    response = api.delete(f"/v1/contacts/{contact['id']}")
    assert response.json() == {"data": {"deleted": True, "id": contact["id"]}}
    assert_error(api.get(f"/v1/contacts/{contact['id']}"), 404, "not_found")


def test_patch_timestamps_are_utc_z(api: httpx.Client, contact: dict[str, Any]) -> None:
    """updated_date ends in Z and parses as UTC, a moment after the request started."""
    before = datetime.now(UTC)
    time.sleep(0.002)
    data = api.patch(f"/v1/contacts/{contact['id']}", json={"job_title": "x"}).json()["data"]
    assert data["updated_date"].endswith("Z")
    assert datetime.fromisoformat(data["updated_date"]) > before
