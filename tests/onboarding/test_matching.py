"""Pure onboarding logic: match keys, export columns, the matching rules."""

from __future__ import annotations

import pytest

from worker.onboarding.crm_export import CrmRow, ExportFormatError, InvalidRow, read_export
from worker.onboarding.keys import company_key, email_key, name_company_key, phone_key
from worker.onboarding.matching import (
    ALREADY_LINKED,
    AMBIGUOUS,
    MATCHED,
    UNMATCHED,
    ContactIndex,
    LeadLexContact,
    match_rows,
)


def test_email_key_ignores_case_spacing_and_mailto() -> None:
    """Two spellings of one address give one key; junk gives none."""
    assert email_key("  Jane.Doe@EXAMPLE.com ") == email_key("mailto:jane.doe@example.com")
    assert email_key("not an address") is None
    assert email_key("") is None


def test_phone_key_reads_national_numbers_in_the_default_region() -> None:
    """A phone without country code equals its +1 form under region US, not under DE."""
    assert phone_key("(415) 200-0007", "US") == phone_key("+1 415.200.0007", "DE") == "+14152000007"
    assert phone_key("(415) 200-0007", "DE") != "+14152000007"
    assert phone_key("12", "US") is None


def test_company_key_drops_legal_forms_and_accents() -> None:
    """'Müller GmbH' and 'muller' are one company; name+company needs both parts."""
    assert company_key("Müller GmbH") == company_key("muller")
    assert name_company_key("Jane  Doe", "Acme, Inc.") == "jane doe|acme"
    assert name_company_key("Jane Doe", "") is None


def _rows(*rows: dict[str, str]) -> list[CrmRow]:
    return [CrmRow(i + 2, r.pop("object_id"), r) for i, r in enumerate(rows)]


def test_rules_in_order_and_ambiguity_never_linked() -> None:
    """Email first, then phone, name+company only when asked; several candidates = ambiguous."""
    index = ContactIndex(
        [
            LeadLexContact("a", "Ann One", "ann@x.test", "+14152000001", "Acme"),
            LeadLexContact("b", "Bob Two", "dup@x.test", "", ""),
            LeadLexContact("c", "Cat Three", "DUP@x.test", "", ""),
            LeadLexContact("d", "Dan Four", "", "(415) 200-0004", "Globex Inc"),
        ],
        "US",
    )
    rows = _rows(
        {"object_id": "1", "email": "ANN@x.test"},
        {"object_id": "2", "email": "dup@x.test"},
        {"object_id": "3", "phone": "+1 415 200 0004"},
        {"object_id": "4", "first_name": "Dan", "last_name": "Four", "company": "Globex"},
        {"object_id": "5", "email": "nobody@x.test"},
        {"object_id": "6", "email": "ann@x.test"},
    )
    report = match_rows(rows, index, linked={"6": "a"}, linked_to={"a": {"6"}})
    by_id = {m.row.object_id: m for m in report.matches}
    assert by_id["1"].status == AMBIGUOUS  # contact a is already linked to record 6
    assert by_id["2"].status == AMBIGUOUS
    assert set(by_id["2"].candidates) == {"b", "c"}
    assert (by_id["3"].status, by_id["3"].leadlex_id, by_id["3"].rule) == (MATCHED, "d", "phone")
    assert by_id["4"].status == UNMATCHED
    assert by_id["5"].status == UNMATCHED
    assert by_id["6"].status == ALREADY_LINKED
    with_names = match_rows(rows[3:4], index, linked={}, use_name_company=True)
    assert (with_names.matches[0].status, with_names.matches[0].rule) == (MATCHED, "name_company")


def test_two_rows_claiming_one_contact_are_both_ambiguous() -> None:
    """A CRM duplicate (two records, one person) is reported, not linked twice."""
    index = ContactIndex([LeadLexContact("a", email="a@x.test")], "US")
    report = match_rows(
        _rows({"object_id": "1", "email": "a@x.test"}, {"object_id": "2", "email": "A@x.test"}),
        index,
        linked={},
    )
    assert [m.status for m in report.matches] == [AMBIGUOUS, AMBIGUOUS]


def test_read_export_by_profile_with_overrides_and_salesforce_ids() -> None:
    """Salesforce report columns are found, 15-char ids become 18, a bad id is invalid."""
    text = [
        "Contact ID,First Name,Last Name,E-mail Address,Phone,Account Name\n",
        "003000000000001,Ann,One,ann@x.test,+1 415 200 0001,Acme\n",
        "bad:id,Bob,Two,bob@x.test,,\n",
    ]
    items = list(read_export(text, "salesforce", {"email": "e-mail  address"}))
    assert isinstance(items[0], CrmRow)
    assert items[0].object_id == "003000000000001AAA"
    assert items[0].get("email") == "ann@x.test"
    assert isinstance(items[1], InvalidRow)
    assert items[1].line == 3
    with pytest.raises(ExportFormatError, match="Record ID"):
        list(read_export(["Id,Email\n"], "hubspot"))
