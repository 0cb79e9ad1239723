"""map_record rules: name composition, clears, rejections, several feeders, notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mapping.snapshots import snap
from worker.mapping import FieldValue, MappingConfig, Rejection, load_mapping, map_record


def test_full_name_from_one_changed_part_uses_snapshot(cfg: MappingConfig) -> None:
    """Changing only the last name recomposes full_name with the snapshot's first name."""
    values = {"firstname": ("Jane", 100), "lastname": ("Smith", 300), "email": ("j@x.io", 50)}
    result = map_record(cfg, "hubspot", "contact", values, ["lastname"])
    assert result.fields == {"full_name": FieldValue("Jane Smith", 300)}


def test_full_name_ts_is_newest_part(cfg: MappingConfig) -> None:
    """The composed full_name carries the newest timestamp of its parts."""
    values = {"firstname": ("Jane", 900), "lastname": ("Smith", 300)}
    result = map_record(cfg, "hubspot", "contact", values, ["lastname"])
    assert result.fields["full_name"] == FieldValue("Jane Smith", 900)


def test_full_name_from_single_existing_part(cfg: MappingConfig) -> None:
    """With only a first name known, full_name is that first name."""
    result = map_record(cfg, "salesforce", "lead", snap(FirstName=" Cher "), ["FirstName"])
    assert result.fields == {"full_name": FieldValue("Cher", 1_000)}


def test_cleared_name_part_recomposes_from_the_other(cfg: MappingConfig) -> None:
    """Clearing the last name sends full_name = first name as of the clear; not 'skipped'."""
    values = {"FirstName": ("Mara", 100), "LastName": (None, 200)}
    result = map_record(cfg, "salesforce", "contact", values, ["LastName"])
    assert result.fields == {"full_name": FieldValue("Mara", 200)}
    assert result.skipped == []


def test_both_name_parts_cleared_is_skipped(cfg: MappingConfig) -> None:
    """Clearing the only remaining name part sends nothing and lists the field as skipped."""
    values = {"FirstName": ("", 100), "LastName": (None, 200)}
    result = map_record(cfg, "salesforce", "contact", values, ["LastName"])
    assert result.fields == {}
    assert result.skipped == ["LastName"]


def test_direct_full_name_wins_when_changed(cfg: MappingConfig) -> None:
    """A changed direct full_name beats the composed parts, even if the parts changed too."""
    values = snap(full_name="Dr. Ada King", first_name="Ada", last_name="Lovelace")
    result = map_record(cfg, "generic", "contact", values, ["first_name", "full_name"])
    assert result.fields == {"full_name": FieldValue("Dr. Ada King", 1_000)}


def test_composed_lists_a_name_made_from_the_parts_only(cfg: MappingConfig) -> None:
    """`composed` names full_name when it was made from the parts (one part is enough), not
    when a direct full-name field was sent, nor when nothing could be composed."""
    half = map_record(cfg, "hubspot", "contact", {"lastname": ("Ln30x5", 5)}, ["lastname"])
    assert half.fields == {"full_name": FieldValue("Ln30x5", 5)}
    assert half.composed == frozenset({"full_name"})
    values = snap(full_name="Dr. Ada King", first_name="Ada", last_name="Lovelace")
    direct = map_record(cfg, "generic", "contact", values, ["first_name", "full_name"])
    assert direct.composed == frozenset()
    cleared = map_record(cfg, "salesforce", "contact", {"LastName": (None, 200)}, ["LastName"])
    assert (cleared.fields, cleared.composed) == ({}, frozenset())


def test_unchanged_direct_full_name_does_not_block_parts(cfg: MappingConfig) -> None:
    """If only a part changed, full_name is composed even when a direct value exists."""
    values = snap(full_name="Old Name", first_name="Ada", last_name="Lovelace")
    result = map_record(cfg, "generic", "contact", values, ["last_name"])
    assert result.fields == {"full_name": FieldValue("Ada Lovelace", 1_000)}


@pytest.mark.parametrize("cleared", [None, "", "   ", "\t\n"])
def test_cleared_value_is_skipped_never_sent(cfg: MappingConfig, cleared: str | None) -> None:
    """clear_policy 'skip': a cleared field is listed in skipped and not sent."""
    values = snap(jobtitle=cleared, company="Acme")
    result = map_record(cfg, "hubspot", "contact", values, ["jobtitle", "company"])
    assert result.fields == {"company_name": FieldValue("Acme", 1_000)}
    assert result.skipped == ["jobtitle"]
    assert cfg.clear_policy == "skip"


def test_changed_field_missing_from_snapshot_is_skipped(cfg: MappingConfig) -> None:
    """A changed field the snapshot does not hold is treated as cleared."""
    result = map_record(cfg, "hubspot", "contact", {}, ["phone"])
    assert result.fields == {}
    assert result.skipped == ["phone"]


def test_rejected_value_leaves_other_fields(cfg: MappingConfig) -> None:
    """An invalid phone is rejected with its reason; the other changed fields still go."""
    values = snap(phone="call me maybe", email="ok@example.com", jobtitle="CEO")
    result = map_record(cfg, "hubspot", "contact", values, ["phone", "email", "jobtitle"])
    assert set(result.fields) == {"email", "job_title"}
    assert len(result.rejected) == 1
    rejection = result.rejected[0]
    assert (rejection.leadlex_field, rejection.crm_field, rejection.reason) == (
        "phone",
        "phone",
        "invalid_phone",
    )
    assert rejection.value == "call me maybe"
    assert rejection.message


@pytest.mark.parametrize(
    ("crm", "raw", "reason"),
    [
        ("email", "jane@@example.com", "invalid_email"),
        ("phone", "12345", "invalid_phone"),
        ("hs_linkedin_url", "https://twitter.com/jane", "invalid_linkedin_url"),
        ("jobtitle", "x" * 256, "too_long"),
        ("company", "y" * 300, "too_long"),
        ("email", "a" * 250 + "@example.com", "too_long"),
    ],
)
def test_rejection_reasons(cfg: MappingConfig, crm: str, raw: str, reason: str) -> None:
    """Each kind of bad value gets its reason code and is left out of fields."""
    result = map_record(cfg, "hubspot", "contact", snap(**{crm: raw}), [crm])
    assert result.fields == {}
    assert [r.reason for r in result.rejected] == [reason]
    assert result.skipped == []


def test_exactly_255_characters_is_accepted(cfg: MappingConfig) -> None:
    """A 255-character value is at the limit and is sent unchanged."""
    result = map_record(cfg, "hubspot", "contact", snap(jobtitle="x" * 255), ["jobtitle"])
    assert result.fields["job_title"].value == "x" * 255


def test_too_long_counts_after_whitespace_collapse(cfg: MappingConfig) -> None:
    """Length is measured on the cleaned text, so padding does not trigger too_long."""
    raw = "  " + "a  " * 120 + "  "  # 360 raw characters, 239 once collapsed
    result = map_record(cfg, "hubspot", "contact", snap(jobtitle=raw), ["jobtitle"])
    assert result.fields["job_title"].value == " ".join(["a"] * 120)


def test_composed_full_name_too_long(cfg: MappingConfig) -> None:
    """A full_name over 255 characters is rejected under the name-part field names."""
    values = snap(firstname="a" * 200, lastname="b" * 100)
    result = map_record(cfg, "hubspot", "contact", values, ["firstname"])
    assert result.fields == {}
    assert result.rejected == [
        Rejection(
            "full_name",
            "firstname+lastname",
            "a" * 200 + " " + "b" * 100,
            "too_long",
            "longer than 255 characters",
        )
    ]


def test_rejected_value_is_kept_whole(cfg: MappingConfig) -> None:
    """A too-long value is reported whole (cleaned), so a replay cannot send a cut copy."""
    result = map_record(cfg, "hubspot", "contact", snap(company=" z" * 50_000), ["company"])
    assert result.rejected[0].value == " ".join(["z"] * 50_000)


def test_control_characters_are_dropped(cfg: MappingConfig) -> None:
    """NUL and other control characters never reach LeadLex; tabs/newlines become spaces."""
    values = snap(jobtitle="Head\x00 of\tSales\nEMEA\x7f")
    result = map_record(cfg, "hubspot", "contact", values, ["jobtitle"])
    assert result.fields["job_title"].value == "Head of Sales EMEA"


def test_text_is_nfc_normalized(cfg: MappingConfig) -> None:
    """Decomposed accents are composed (NFC) so LeadLex sees one spelling."""
    values = snap(lastname="Mu\u0308ller")
    result = map_record(cfg, "hubspot", "contact", values, ["lastname"])
    assert result.fields["full_name"].value == "M\u00fcller"


def test_only_fields_affected_by_changed(cfg: MappingConfig) -> None:
    """Fields present in the snapshot but not changed are not returned."""
    values = snap(email="a@b.io", phone="+14155552671", jobtitle="CEO", company="Acme")
    result = map_record(cfg, "hubspot", "contact", values, ["company"])
    assert set(result.fields) == {"company_name"}


def test_duplicate_changed_names_count_once(cfg: MappingConfig) -> None:
    """A field named twice in `changed` is mapped and reported once."""
    result = map_record(cfg, "hubspot", "contact", snap(foo="1"), ["foo", "foo"])
    assert result.skipped == ["foo"]


# ---- several CRM fields feeding one LeadLex field ------------------------------------------


@pytest.fixture(scope="module")
def two_phones(tmp_path_factory: pytest.TempPathFactory) -> MappingConfig:
    """HubSpot and Salesforce mappings where mobile and main phone both feed phone."""
    path = tmp_path_factory.mktemp("m") / "two_phones.toml"
    path.write_text(
        '[hubspot.contact.fields]\nmobilephone = "phone"\n'
        '[salesforce.contact.fields]\nMobilePhone = "phone"\n'
    )
    return load_mapping(path)


def test_newest_feeder_wins(two_phones: MappingConfig) -> None:
    """The newer of phone / mobilephone is sent."""
    values = {"phone": ("+14155550100", 200), "mobilephone": ("+14155550199", 100)}
    result = map_record(two_phones, "hubspot", "contact", values, ["phone"])
    assert result.fields == {"phone": FieldValue("+14155550100", 200)}


def test_older_feeder_change_is_superseded(two_phones: MappingConfig) -> None:
    """A change older than another feeder's current value is not sent (nor skipped)."""
    values = {"phone": ("+14155550100", 200), "mobilephone": ("+14155550199", 100)}
    result = map_record(two_phones, "hubspot", "contact", values, ["mobilephone"])
    assert result.fields == {}
    assert result.skipped == []


def test_tie_goes_to_later_declared_feeder(two_phones: MappingConfig) -> None:
    """Salesforce sends both phones with one timestamp: the pair added later wins."""
    values = snap(Phone="+14155550100", MobilePhone="+14155550199")
    result = map_record(two_phones, "salesforce", "contact", values, ["Phone", "MobilePhone"])
    assert result.fields == {"phone": FieldValue("+14155550199", 1_000)}


def test_empty_feeder_falls_back_to_the_other(two_phones: MappingConfig) -> None:
    """An empty MobilePhone leaves Phone as the value to send; the clear is skipped."""
    values = snap(Phone="+14155550100", MobilePhone="")
    result = map_record(two_phones, "salesforce", "contact", values, ["Phone", "MobilePhone"])
    assert result.fields == {"phone": FieldValue("+14155550100", 1_000)}
    assert result.skipped == ["MobilePhone"]


# ---- notes -------------------------------------------------------------------------------


def test_notes_value_is_full_cleaned_text(cfg: MappingConfig) -> None:
    """notes carries the whole CRM text with CRLF folded to LF, lines kept."""
    values = snap(ts=5, Description="Line one\r\nLine  two\r\n\x00")
    result = map_record(cfg, "salesforce", "contact", values, ["Description"])
    assert result.notes == FieldValue("Line one\nLine  two", 5)


def test_notes_unchanged_gives_none(cfg: MappingConfig) -> None:
    """Notes in the snapshot but not in `changed` are not returned."""
    result = map_record(cfg, "salesforce", "contact", snap(Description="x", Title="y"), ["Title"])
    assert result.notes is None


def test_cleared_notes_are_skipped(cfg: MappingConfig) -> None:
    """Emptying the notes field appends nothing and lists it as skipped."""
    result = map_record(cfg, "salesforce", "contact", snap(Description=""), ["Description"])
    assert result.notes is None
    assert result.skipped == ["Description"]


def test_notes_over_limit_rejected(cfg: MappingConfig) -> None:
    """Notes text longer than 10,000 characters is rejected as too_long."""
    values = snap(leadlex_notes="n" * 10_001)
    result = map_record(cfg, "hubspot", "contact", values, ["leadlex_notes"])
    assert result.notes is None
    assert [(r.leadlex_field, r.reason) for r in result.rejected] == [("notes", "too_long")]
    assert result.skipped == []


def test_notes_at_limit_accepted(cfg: MappingConfig) -> None:
    """Exactly 10,000 characters of notes is accepted."""
    values = snap(leadlex_notes="n" * 10_000)
    result = map_record(cfg, "hubspot", "contact", values, ["leadlex_notes"])
    assert result.notes is not None


def test_disabled_notes_field_is_skipped(tmp_path: Path) -> None:
    """With notes disabled, the notes field is just another unmapped field."""
    path = tmp_path / "m.toml"
    path.write_text("[salesforce.notes]\nenabled = false\n")
    result = map_record(
        load_mapping(path), "salesforce", "contact", snap(Description="x"), ["Description"]
    )
    assert result.notes is None
    assert result.skipped == ["Description"]


def test_phone_uses_configured_region(tmp_path: Path) -> None:
    """A number without '+' is read in the mapping's default region."""
    path = tmp_path / "m.toml"
    path.write_text('default_region = "GB"\n')
    result = map_record(
        load_mapping(path), "hubspot", "contact", snap(phone="020 7946 0958"), ["phone"]
    )
    assert result.fields["phone"].value == "+442079460958"


def test_unsendable_names_refused_or_cleared_single_fields_only(cfg: MappingConfig) -> None:
    """`unsendable`: the fields whose snapshot value LeadLex cannot be given (refused or
    cleared), among single-target mapped fields; never name parts, notes or unmapped ones."""
    from worker.mapping import unsendable

    values = {
        "phone": ("ask for h12 12", 300),
        "email": (None, 300),
        "jobtitle": ("CTO", 300),
        "firstname": (None, 300),
        "leadlex_notes": (None, 300),
        "favorite_color": (None, 300),
    }
    assert unsendable(cfg, "hubspot", "contact", values, list(values)) == {"phone", "email"}
    # Salesforce: case as the CRM names it; an unknown object type has none.
    sf = {"Phone": ("n/a", 1), "Title": ("CTO", 1)}
    assert unsendable(cfg, "salesforce", "contact", sf, ["Phone", "Title"]) == {"Phone"}
    assert unsendable(cfg, "salesforce", "task", sf, ["Phone"]) == set()
