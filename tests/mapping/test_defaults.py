"""The built-in mapping: every default pair per source and object type."""

from __future__ import annotations

import pytest

from tests.mapping.snapshots import UUID, snap
from worker.mapping import FieldValue, MappingConfig, map_record, mapping_fields_for

DIRECT_PAIRS = [
    # source, object_type, CRM field, CRM value, LeadLex field, sent value
    ("hubspot", "contact", "email", "Jane@Example.COM", "email", "Jane@example.com"),
    ("hubspot", "contact", "phone", "(415) 555-2671", "phone", "+14155552671"),
    ("hubspot", "contact", "jobtitle", "  VP   Sales ", "job_title", "VP Sales"),
    ("hubspot", "contact", "company", "Acme Inc", "company_name", "Acme Inc"),
    (
        "hubspot",
        "contact",
        "hs_linkedin_url",
        "https://linkedin.com/in/jane-doe/",
        "linkedin_url",
        "https://www.linkedin.com/in/jane-doe",
    ),
    ("salesforce", "contact", "Email", "mara@example.org", "email", "mara@example.org"),
    ("salesforce", "contact", "Phone", "+44 20 7946 0958", "phone", "+442079460958"),
    ("salesforce", "contact", "Title", "CFO", "job_title", "CFO"),
    ("salesforce", "lead", "Email", "lead@example.org", "email", "lead@example.org"),
    ("salesforce", "lead", "Phone", "415.555.2671", "phone", "+14155552671"),
    ("salesforce", "lead", "Title", "Buyer", "job_title", "Buyer"),
    ("salesforce", "lead", "Company", "Quist GmbH", "company_name", "Quist GmbH"),
]
for _obj in ("contact", "lead"):
    DIRECT_PAIRS += [
        (
            "generic",
            _obj,
            "full_name",
            "Jean-Claude van Damme",
            "full_name",
            "Jean-Claude van Damme",
        ),
        ("generic", _obj, "email", "a@b.io", "email", "a@b.io"),
        ("generic", _obj, "phone", "+1 202 555 0173", "phone", "+12025550173"),
        ("generic", _obj, "job_title", "CTO", "job_title", "CTO"),
        ("generic", _obj, "company_name", "Initech", "company_name", "Initech"),
        (
            "generic",
            _obj,
            "linkedin_url",
            "http://de.linkedin.com/in/hans",
            "linkedin_url",
            "https://www.linkedin.com/in/hans",
        ),
    ]

NAME_PARTS = [
    ("hubspot", "contact", "firstname", "lastname"),
    ("salesforce", "contact", "FirstName", "LastName"),
    ("salesforce", "lead", "FirstName", "LastName"),
    ("generic", "contact", "first_name", "last_name"),
    ("generic", "lead", "first_name", "last_name"),
]

UNMAPPED = [
    ("hubspot", "contact", "mobilephone", "+14155552671"),
    ("hubspot", "contact", "hs_object_id", "101"),
    ("salesforce", "contact", "AccountId", "0015g00000AbCdEAAV"),
    ("salesforce", "contact", "MobilePhone", "+447700900123"),
    ("salesforce", "contact", "Company", "Not on contacts"),
    ("salesforce", "contact", "Name", "Mara Quist"),
    ("salesforce", "lead", "MobilePhone", "+447700900123"),
]

NOTES = [
    ("hubspot", "contact", "leadlex_notes", "[HubSpot] "),
    ("salesforce", "contact", "Description", "[Salesforce] "),
    ("salesforce", "lead", "Description", "[Salesforce] "),
    ("generic", "contact", "notes", ""),
    ("generic", "lead", "notes", ""),
]

ID_FIELDS = [
    ("hubspot", "contact", "leadlex_contact_id"),
    ("salesforce", "contact", "LeadLex_Id__c"),
    ("salesforce", "lead", "LeadLex_Id__c"),
    ("generic", "contact", "leadlex_id"),
    ("generic", "lead", "leadlex_id"),
]


@pytest.mark.parametrize(("source", "obj", "crm", "raw", "field", "sent"), DIRECT_PAIRS)
def test_direct_default_pair(
    cfg: MappingConfig, source: str, obj: str, crm: str, raw: str, field: str, sent: str
) -> None:
    """Each default CRM field lands, normalized, in its LeadLex field with the CRM time."""
    result = map_record(cfg, source, obj, snap(ts=42, **{crm: raw}), [crm])
    assert result.fields == {field: FieldValue(sent, 42)}
    assert result.rejected == []
    assert result.skipped == []


@pytest.mark.parametrize(("source", "obj", "first", "last"), NAME_PARTS)
def test_name_parts_compose_full_name(
    cfg: MappingConfig, source: str, obj: str, first: str, last: str
) -> None:
    """First and last name parts become one full_name, the only name field sent."""
    values = {first: ("Mara", 10), last: ("Quist", 20)}
    result = map_record(cfg, source, obj, values, [first, last])
    assert result.fields == {"full_name": FieldValue("Mara Quist", 20)}


@pytest.mark.parametrize(("source", "obj", "crm", "raw"), UNMAPPED)
def test_unmapped_fields_are_skipped(
    cfg: MappingConfig, source: str, obj: str, crm: str, raw: str
) -> None:
    """Fields without a default LeadLex target are listed in skipped and not sent."""
    result = map_record(cfg, source, obj, snap(**{crm: raw}), [crm])
    assert result.fields == {}
    assert result.skipped == [crm]


@pytest.mark.parametrize(("source", "obj", "crm", "prefix"), NOTES)
def test_default_notes_field_and_prefix(
    cfg: MappingConfig, source: str, obj: str, crm: str, prefix: str
) -> None:
    """The default notes field fills `notes` (never `fields`) and its source prefix is known."""
    result = map_record(cfg, source, obj, snap(ts=7, **{crm: "Met at SaaStr"}), [crm])
    assert result.notes == FieldValue("Met at SaaStr", 7)
    assert "notes" not in result.fields
    assert result.skipped == []
    assert cfg.notes_prefix(source, obj) == prefix


@pytest.mark.parametrize(("source", "obj", "crm"), ID_FIELDS)
def test_default_leadlex_id_field(cfg: MappingConfig, source: str, obj: str, crm: str) -> None:
    """The default id field yields leadlex_id (lower-cased) even when it did not change."""
    result = map_record(cfg, source, obj, snap(**{crm: UUID.upper(), "x": "y"}), ["x"])
    assert result.leadlex_id == UUID


def test_changed_id_field_is_neither_mapped_nor_skipped(cfg: MappingConfig) -> None:
    """A change to the LeadLex id field itself is consumed, not reported as skipped."""
    result = map_record(
        cfg, "hubspot", "contact", snap(leadlex_contact_id=UUID), ["leadlex_contact_id"]
    )
    assert result.skipped == []
    assert result.fields == {}
    assert result.leadlex_id == UUID


def test_invalid_leadlex_id_is_ignored(cfg: MappingConfig) -> None:
    """A value in the id field that is not a UUID gives leadlex_id None."""
    result = map_record(cfg, "generic", "contact", snap(leadlex_id="abc-123"), [])
    assert result.leadlex_id is None


def test_hubspot_names_are_case_insensitive(cfg: MappingConfig) -> None:
    """HubSpot property names match regardless of case; skipped keeps the event's spelling."""
    values = snap(FirstName="Ada", LASTNAME="Lovelace", Email="ada@example.com", Foo="x")
    result = map_record(cfg, "hubspot", "contact", values, ["LASTNAME", "Email", "Foo"])
    assert result.fields["full_name"].value == "Ada Lovelace"
    assert result.fields["email"].value == "ada@example.com"
    assert result.skipped == ["Foo"]


def test_salesforce_names_are_case_sensitive(cfg: MappingConfig) -> None:
    """Salesforce API names match exactly: `email` is not `Email`."""
    result = map_record(cfg, "salesforce", "contact", snap(email="a@b.io"), ["email"])
    assert result.fields == {}
    assert result.skipped == ["email"]


def test_email_comes_from_snapshot_even_when_unchanged(cfg: MappingConfig) -> None:
    """`email` reports the snapshot's normalized email for resolve-by-email."""
    values = snap(email="Ann@EXAMPLE.org", jobtitle="CEO")
    result = map_record(cfg, "hubspot", "contact", values, ["jobtitle"])
    assert result.email == "Ann@example.org"
    assert set(result.fields) == {"job_title"}


def test_invalid_snapshot_email_gives_none(cfg: MappingConfig) -> None:
    """An invalid email in the snapshot is not offered for resolve-by-email."""
    result = map_record(cfg, "hubspot", "contact", snap(email="not an email"), [])
    assert result.email is None


def test_unknown_source_or_object_skips_everything(cfg: MappingConfig) -> None:
    """An object type without a mapping (HubSpot lead by default) maps nothing."""
    result = map_record(cfg, "hubspot", "lead", snap(email="a@b.io"), ["email", "email"])
    assert result.fields == {}
    assert result.skipped == ["email"]
    assert result.email is None


def test_mapping_fields_for_lists_every_field_read(cfg: MappingConfig) -> None:
    """mapping_fields_for names mapped, notes and id fields, but not unmapped defaults."""
    assert mapping_fields_for(cfg, "hubspot", "contact") == {
        "firstname",
        "lastname",
        "email",
        "phone",
        "jobtitle",
        "company",
        "hs_linkedin_url",
        "leadlex_notes",
        "leadlex_contact_id",
    }
    assert mapping_fields_for(cfg, "salesforce", "lead") == {
        "FirstName",
        "LastName",
        "Email",
        "Phone",
        "Title",
        "Company",
        "Description",
        "LeadLex_Id__c",
    }
    assert mapping_fields_for(cfg, "hubspot", "lead") == set()
