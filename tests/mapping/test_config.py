"""Mapping files (TOML and YAML): merging over defaults, and every MappingError path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mapping.snapshots import snap
from worker.mapping import (
    FieldValue,
    MappingConfig,
    MappingError,
    default_mapping,
    load_mapping,
    map_record,
    mapping_fields_for,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "mapping.example.toml"

TOML = """
default_region = "GB"
clear_policy = "skip"
[hubspot.contact.fields]
mobilephone = "phone"
company = false
jobtitle = ""
leadlex_role = "job_title"
[hubspot.contact]
leadlex_id_field = "leadlex_id"
[hubspot.notes]
field = "notes_for_leadlex"
prefix = "[HS] "
enabled = true
[salesforce.lead.fields]
LinkedIn__c = "linkedin_url"
"""

YAML = """
default_region: GB
clear_policy: skip
hubspot:
  contact:
    leadlex_id_field: leadlex_id
    fields:
      mobilephone: phone
      company: false
      jobtitle: ~
      leadlex_role: job_title
  notes:
    field: notes_for_leadlex
    prefix: "[HS] "
    enabled: true
salesforce:
  lead:
    fields:
      LinkedIn__c: linkedin_url
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    """Write a mapping file into the test's temporary directory."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(params=[("m.toml", TOML), ("m.yaml", YAML), ("m.yml", YAML)], ids=str)
def loaded(request: pytest.FixtureRequest, tmp_path: Path) -> MappingConfig:
    """The same mapping written as TOML, .yaml and .yml."""
    name, text = request.param
    return load_mapping(write(tmp_path, name, text))


def test_file_sets_region_and_policy(loaded: MappingConfig) -> None:
    """Top-level settings in the file override the built-in ones."""
    assert loaded.default_region == "GB"
    assert loaded.clear_policy == "skip"
    assert loaded.max_length == 255
    assert loaded.max_notes_length == 10_000


def test_file_adds_a_pair(loaded: MappingConfig) -> None:
    """An added pair maps the CRM field; numbers read in the file's region."""
    result = map_record(
        loaded, "hubspot", "contact", snap(mobilephone="07700 900123"), ["mobilephone"]
    )
    assert result.fields == {"phone": FieldValue("+447700900123", 1_000)}


def test_file_adds_a_custom_property(loaded: MappingConfig) -> None:
    """A custom property can feed a LeadLex field."""
    result = map_record(loaded, "hubspot", "contact", snap(leadlex_role="CTO"), ["leadlex_role"])
    assert result.fields == {"job_title": FieldValue("CTO", 1_000)}


@pytest.mark.parametrize("crm", ["company", "jobtitle"])
def test_file_drops_a_pair(loaded: MappingConfig, crm: str) -> None:
    """false, "" (TOML) and null (YAML) drop a default pair: the field is then skipped."""
    result = map_record(loaded, "hubspot", "contact", snap(**{crm: "x"}), [crm])
    assert result.fields == {}
    assert result.skipped == [crm]


def test_file_keeps_untouched_defaults(loaded: MappingConfig) -> None:
    """Defaults the file does not mention still apply."""
    result = map_record(loaded, "hubspot", "contact", snap(email="a@b.io"), ["email"])
    assert result.fields == {"email": FieldValue("a@b.io", 1_000)}


def test_file_changes_notes_and_id(loaded: MappingConfig) -> None:
    """Notes field, prefix and the id field come from the file."""
    values = snap(notes_for_leadlex="hello", leadlex_id="0b9e5c1a-1111-4222-8333-123456789abc")
    result = map_record(
        loaded, "hubspot", "contact", values, ["notes_for_leadlex", "leadlex_notes"]
    )
    assert result.notes == FieldValue("hello", 1_000)
    assert result.skipped == ["leadlex_notes"]
    assert result.leadlex_id == "0b9e5c1a-1111-4222-8333-123456789abc"
    assert loaded.notes_prefix("hubspot", "contact") == "[HS] "


def test_file_extends_salesforce_lead_only(loaded: MappingConfig) -> None:
    """A pair added to salesforce.lead does not leak into salesforce.contact."""
    assert "LinkedIn__c" in mapping_fields_for(loaded, "salesforce", "lead")
    assert "LinkedIn__c" not in mapping_fields_for(loaded, "salesforce", "contact")


def test_hubspot_file_keys_are_case_folded(tmp_path: Path) -> None:
    """HubSpot names in the file are case-insensitive like the events' names."""
    cfg = load_mapping(
        write(tmp_path, "m.toml", '[hubspot.contact.fields]\nMobilePhone = "phone"\n')
    )
    result = map_record(
        cfg, "hubspot", "contact", snap(mobilephone="+14155552671"), ["mobilephone"]
    )
    assert result.fields["phone"].value == "+14155552671"


def test_new_object_type_starts_empty(tmp_path: Path) -> None:
    """A section for an object type without defaults maps only what it lists."""
    cfg = load_mapping(write(tmp_path, "m.toml", '[hubspot.lead.fields]\nemail = "email"\n'))
    assert mapping_fields_for(cfg, "hubspot", "lead") == {
        "email",
        "leadlex_notes",
        "leadlex_contact_id",
    }


def test_source_level_id_field_applies_to_all_objects(tmp_path: Path) -> None:
    """[salesforce] leadlex_id_field sets the id field for contacts and leads alike."""
    cfg = load_mapping(write(tmp_path, "m.toml", '[salesforce]\nleadlex_id_field = "LL_Id__c"\n'))
    for obj in ("contact", "lead"):
        assert cfg.objects[("salesforce", obj)].leadlex_id_field == "LL_Id__c"


def test_id_field_can_be_disabled(tmp_path: Path) -> None:
    """leadlex_id_field = false means no CRM field carries the LeadLex id."""
    cfg = load_mapping(write(tmp_path, "m.toml", "[generic]\nleadlex_id_field = false\n"))
    result = map_record(
        cfg, "generic", "contact", snap(leadlex_id="0b9e5c1a-1111-4222-8333-123456789abc"), []
    )
    assert result.leadlex_id is None


def test_none_path_gives_defaults() -> None:
    """No mapping file means the built-in mapping with the given region."""
    assert load_mapping(None, "DE") == default_mapping("DE")
    assert load_mapping(None, "de").default_region == "DE"


def test_region_argument_is_fallback(tmp_path: Path) -> None:
    """Without default_region in the file, the argument (the setting) is used."""
    cfg = load_mapping(write(tmp_path, "m.toml", "max_length = 100\n"), default_region="FR")
    assert cfg.default_region == "FR"
    assert cfg.max_length == 100


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    """An empty YAML file is the built-in mapping."""
    assert load_mapping(write(tmp_path, "m.yaml", "")) == default_mapping()


def test_example_file_loads() -> None:
    """docs/mapping.example.toml is a valid mapping file."""
    cfg = load_mapping(EXAMPLE)
    assert cfg.default_region == "GB"
    assert cfg.objects[("hubspot", "contact")].targets["mobilephone"] == "phone"
    assert "company" not in cfg.objects[("hubspot", "contact")].targets


ERRORS = [
    # (file name, content, exact error message)
    (
        "m.toml",
        '[hubspot.contact.fields]\nmobilephone = "fone"\n',
        "hubspot.contact.fields.mobilephone: unknown LeadLex field 'fone' (did you mean 'phone'?)",
    ),
    (
        "m.toml",
        '[salesforce.contact.fields]\nDescription = "notes"\n',
        "salesforce.contact.fields.Description: unknown LeadLex field 'notes' "
        "(notes are configured in [salesforce.notes])",
    ),
    (
        "m.toml",
        '[generic.contact.fields]\nx = "priority"\n',
        "generic.contact.fields.x: unknown LeadLex field 'priority' (expected full_name, "
        "first_name, last_name, email, phone, job_title, company_name or linkedin_url)",
    ),
    (
        "m.toml",
        "[hubspot.contact.fields]\nphone = true\n",
        "hubspot.contact.fields.phone: expected a LeadLex field name or false, got a boolean",
    ),
    (
        "m.toml",
        "[hubspot.contact.fields]\nphone = 3\n",
        "hubspot.contact.fields.phone: expected a LeadLex field name or false, got an integer",
    ),
    (
        "m.toml",
        "mapping = 1\n",
        "mapping: unknown key (expected default_region, clear_policy, "
        "max_length, max_notes_length, hubspot, salesforce or generic)",
    ),
    (
        "m.toml",
        "default_regoin = 'US'\n",
        "default_regoin: unknown key (did you mean 'default_region'?)",
    ),
    (
        "m.toml",
        "[pipedrive.contact.fields]\nemail = 'email'\n",
        "pipedrive: unknown source 'pipedrive' (expected hubspot, salesforce or generic)",
    ),
    (
        "m.toml",
        "[hubspot.deal.fields]\nemail = 'email'\n",
        "hubspot.deal: unknown object type 'deal' (expected contact or lead)",
    ),
    (
        "m.toml",
        "[hubspot]\nnotes_field = 'x'\n",
        "hubspot.notes_field: unknown key (did you mean 'notes'?)",
    ),
    (
        "m.toml",
        "[hubspot.contact]\nfield = {}\n",
        "hubspot.contact.field: unknown key (did you mean 'fields'?)",
    ),
    ("m.toml", "hubspot = 'yes'\n", "hubspot: expected a table/mapping, got a string"),
    (
        "m.toml",
        "[hubspot]\ncontact = 1\n",
        "hubspot.contact: expected a table/mapping, got an integer",
    ),
    (
        "m.toml",
        "[hubspot.contact]\nfields = ['email']\n",
        "hubspot.contact.fields: expected a table/mapping, got a list",
    ),
    (
        "m.toml",
        "[hubspot.notes]\nprefix = 1\n",
        "hubspot.notes.prefix: expected a string, got an integer",
    ),
    (
        "m.toml",
        "[hubspot.notes]\nenabled = 'yes'\n",
        "hubspot.notes.enabled: expected true or false, got a string",
    ),
    (
        "m.toml",
        "[hubspot.notes]\nfeld = 'x'\n",
        "hubspot.notes.feld: unknown key (did you mean 'field'?)",
    ),
    (
        "m.toml",
        "[salesforce.lead.notes]\nfield = 2\n",
        "salesforce.lead.notes.field: expected a CRM field name or false, got an integer",
    ),
    (
        "m.toml",
        "[generic]\nleadlex_id_field = 5\n",
        "generic.leadlex_id_field: expected a CRM field name or false, got an integer",
    ),
    (
        "m.toml",
        "default_region = 'XX'\n",
        "default_region: unknown phone region 'XX' (ISO 3166 code like 'US')",
    ),
    ("m.toml", "default_region = 44\n", "default_region: expected a string, got an integer"),
    (
        "m.toml",
        "clear_policy = 'null'\n",
        "clear_policy: unsupported value 'null' (only 'skip': LeadLex's handling of "
        "null/empty values is undocumented, so clears are never sent)",
    ),
    ("m.toml", "clear_policy = false\n", "clear_policy: expected a string, got a boolean"),
    ("m.toml", "max_length = 0\n", "max_length: expected a positive integer, got 0"),
    (
        "m.toml",
        "max_notes_length = true\n",
        "max_notes_length: expected a positive integer, got True",
    ),
    (
        "m.toml",
        '[hubspot.contact.fields]\nleadlex_notes = "job_title"\n',
        "hubspot.contact: CRM field 'leadlex_notes' is both the notes field and mapped to "
        "job_title (drop one of them)",
    ),
    (
        "m.toml",
        '[salesforce]\nleadlex_id_field = "Email"\n',
        "salesforce.contact: CRM field 'Email' is both the leadlex_id_field and mapped to "
        "email (drop one of them)",
    ),
    (
        "m.toml",
        '[generic]\nleadlex_id_field = "notes"\n',
        "generic.contact: 'notes' is both the notes field and the id field",
    ),
    (
        "m.yaml",
        "hubspot:\n  contact:\n    fields:\n      Phone: phone\n      PHONE: phone\n",
        "hubspot.contact.fields.PHONE: duplicate of 'Phone' (HubSpot names ignore case)",
    ),
    (
        "m.yaml",
        "hubspot:\n  contact:\n    fields:\n      1: phone\n",
        "hubspot.contact.fields: CRM field names must be non-empty strings, got 1",
    ),
    ("m.yaml", "- a\n- b\n", "the top level must be a table/mapping"),
    ("m.json", "{}", "mapping file must end in .toml, .yaml or .yml"),
]


@pytest.mark.parametrize(("name", "text", "message"), ERRORS)
def test_mapping_errors_name_the_path(tmp_path: Path, name: str, text: str, message: str) -> None:
    """Each invalid file raises MappingError with one line naming the offending key."""
    path = write(tmp_path, name, text)
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    text_error = str(info.value)
    assert "\n" not in text_error
    assert text_error.endswith(message)


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("m.toml", "[hubspot\n", "invalid TOML: "),
        ("m.toml", "a = 1\na = 2\n", "invalid TOML: "),
        ("m.yaml", "hubspot: [\n  : :\n", "invalid YAML: "),
        ("m.toml", b"\xff\xfe", "invalid TOML: "),
    ],
)
def test_unparsable_file_is_one_line(
    tmp_path: Path, name: str, text: str | bytes, fragment: str
) -> None:
    """A syntax error is reported on one line with the file name."""
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert str(info.value).startswith(f"{path}: {fragment}")
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    """A file that does not exist is a MappingError naming it."""
    path = tmp_path / "nope.toml"
    with pytest.raises(MappingError, match=r"nope\.toml: cannot read mapping file"):
        load_mapping(path)


def test_bad_region_argument() -> None:
    """An unknown default region passed in (from the setting) is a MappingError."""
    with pytest.raises(MappingError, match="default_region: unknown phone region 'QQ'"):
        default_mapping("QQ")
