"""Which CRM field feeds which LeadLex field: the defaults, the mapping file, and lookups.

A `MappingConfig` is built once (at worker start) and then only read: every lookup
`map_record` needs is precomputed in its `ObjectMapping`s. See the package docstring
for the default pairs and docs/mapping.example.toml for the file format.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import phonenumbers

SOURCES: tuple[str, ...] = ("hubspot", "salesforce", "generic")
OBJECT_TYPES: tuple[str, ...] = ("contact", "lead")
# LeadLex fields a CRM field may feed. first_name / last_name are name *parts*: they
# are composed into full_name (PATCH has no first/last name fields). notes has its
# own section because it appends instead of overwriting.
LEADLEX_FIELDS: tuple[str, ...] = (
    "full_name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "job_title",
    "company_name",
    "linkedin_url",
)
NAME_PARTS: tuple[str, ...] = ("first_name", "last_name")
CLEAR_POLICIES: tuple[str, ...] = ("skip",)
# HubSpot property names are lower case and compared case-insensitively; Salesforce
# API names (FirstName, LeadLex_Id__c) and generic JSON keys are compared exactly.
CASE_INSENSITIVE_SOURCES: frozenset[str] = frozenset({"hubspot"})

DEFAULT_REGION = "US"
DEFAULT_CLEAR_POLICY = "skip"
DEFAULT_MAX_LENGTH = 255
DEFAULT_MAX_NOTES_LENGTH = 10_000

_TOP_KEYS = ("default_region", "clear_policy", "max_length", "max_notes_length", *SOURCES)
_SOURCE_KEYS = ("leadlex_id_field", "notes", *OBJECT_TYPES)
_OBJECT_KEYS = ("fields", "leadlex_id_field", "notes")
_NOTES_KEYS = ("field", "prefix", "enabled")


class MappingError(Exception):
    """The mapping file is unreadable or invalid; str(self) is one line naming the key path."""


@dataclass(frozen=True, slots=True)
class NotesSpec:
    """Which CRM field is appended to LeadLex notes, with what prefix, and whether at all."""

    field: str | None
    prefix: str = ""
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """Per-source settings that object sections may override."""

    leadlex_id_field: str | None
    notes: NotesSpec


# ---- defaults ------------------------------------------------------------------------------
# Order matters only for ties (see ObjectMapping.sources): a later entry wins.
_HUBSPOT_CONTACT: dict[str, str | None] = {
    "firstname": "first_name",
    "lastname": "last_name",
    "email": "email",
    "phone": "phone",
    "mobilephone": None,  # not mapped by default: `mobilephone = "phone"` in the file
    "jobtitle": "job_title",
    "company": "company_name",
    "hs_linkedin_url": "linkedin_url",
}
_SALESFORCE_CONTACT: dict[str, str | None] = {
    "FirstName": "first_name",
    "LastName": "last_name",
    "Name": None,  # read-only compound of the two above
    "Email": "email",
    "Phone": "phone",
    "MobilePhone": None,
    "Title": "job_title",
    "AccountId": None,  # an Account record id, not a company name
}
_SALESFORCE_LEAD: dict[str, str | None] = {
    **{k: v for k, v in _SALESFORCE_CONTACT.items() if k != "AccountId"},
    "Company": "company_name",
}
_GENERIC: dict[str, str | None] = {
    "full_name": "full_name",
    "first_name": "first_name",
    "last_name": "last_name",
    "email": "email",
    "phone": "phone",
    "job_title": "job_title",
    "company_name": "company_name",
    "linkedin_url": "linkedin_url",
}
DEFAULT_FIELDS: Mapping[tuple[str, str], Mapping[str, str | None]] = MappingProxyType(
    {
        ("hubspot", "contact"): MappingProxyType(_HUBSPOT_CONTACT),
        ("salesforce", "contact"): MappingProxyType(_SALESFORCE_CONTACT),
        ("salesforce", "lead"): MappingProxyType(_SALESFORCE_LEAD),
        ("generic", "contact"): MappingProxyType(_GENERIC),
        ("generic", "lead"): MappingProxyType(_GENERIC),
    }
)
DEFAULT_SOURCE_SETTINGS: Mapping[str, SourceSettings] = MappingProxyType(
    {
        "hubspot": SourceSettings("leadlex_contact_id", NotesSpec("leadlex_notes", "[HubSpot] ")),
        "salesforce": SourceSettings("LeadLex_Id__c", NotesSpec("Description", "[Salesforce] ")),
        "generic": SourceSettings("leadlex_id", NotesSpec("notes", "")),
    }
)


@dataclass(frozen=True, slots=True)
class ObjectMapping:
    """The compiled mapping for one (source, object_type); all names already case-folded."""

    source: str
    object_type: str
    fields: Mapping[str, str | None]  # crm field -> LeadLex field (None: known, not mapped)
    leadlex_id_field: str | None
    notes: NotesSpec
    case_insensitive: bool
    # Precomputed lookups:
    targets: Mapping[str, str]  # crm field -> LeadLex field, mapped ones only
    sources: Mapping[str, tuple[str, ...]]  # LeadLex field -> crm fields, declaration order
    notes_field: str | None  # the notes CRM field when notes are enabled
    relevant: frozenset[str]  # every CRM field map_record reads

    @classmethod
    def build(
        cls,
        source: str,
        object_type: str,
        fields: Mapping[str, str | None],
        settings: SourceSettings,
    ) -> ObjectMapping:
        """Compile the lookups; raise MappingError when one CRM field plays two roles."""
        fold = source in CASE_INSENSITIVE_SOURCES
        folded = {(k.lower() if fold else k): v for k, v in fields.items()}
        id_field = settings.leadlex_id_field
        if id_field and fold:
            id_field = id_field.lower()
        notes_field = settings.notes.field if settings.notes.enabled else None
        if notes_field and fold:
            notes_field = notes_field.lower()
        targets = {k: v for k, v in folded.items() if v is not None}
        where = f"{source}.{object_type}"
        for role, name in (("notes field", notes_field), ("leadlex_id_field", id_field)):
            if name and name in targets:
                raise MappingError(
                    f"{where}: CRM field {name!r} is both the {role} and mapped to "
                    f"{targets[name]} (drop one of them)"
                )
        if notes_field and notes_field == id_field:
            raise MappingError(f"{where}: {notes_field!r} is both the notes field and the id field")
        by_target: dict[str, list[str]] = {}
        for crm, target in targets.items():
            by_target.setdefault(target, []).append(crm)
        relevant = set(targets)
        relevant.update(n for n in (notes_field, id_field) if n)
        return cls(
            source=source,
            object_type=object_type,
            fields=MappingProxyType(folded),
            leadlex_id_field=id_field,
            notes=settings.notes,
            case_insensitive=fold,
            targets=MappingProxyType(targets),
            sources=MappingProxyType({t: tuple(c) for t, c in by_target.items()}),
            notes_field=notes_field,
            relevant=frozenset(relevant),
        )


@dataclass(frozen=True)
class MappingConfig:
    """Everything map_record needs: compiled object mappings plus global normalization settings."""

    objects: Mapping[tuple[str, str], ObjectMapping]
    default_region: str = DEFAULT_REGION
    clear_policy: str = DEFAULT_CLEAR_POLICY
    max_length: int = DEFAULT_MAX_LENGTH
    max_notes_length: int = DEFAULT_MAX_NOTES_LENGTH
    source_path: str | None = field(default=None, compare=False)  # the file it came from

    def object_mapping(self, source: str, object_type: str) -> ObjectMapping | None:
        """The compiled mapping for (source, object_type), or None when nothing is configured."""
        return self.objects.get((source, object_type))

    def notes_prefix(self, source: str, object_type: str) -> str:
        """The prefix to pass to `notes_delta` for this source/object ("" when none)."""
        om = self.objects.get((source, object_type))
        return om.notes.prefix if om is not None else ""


def mapping_fields_for(cfg: MappingConfig, source: str, object_type: str) -> set[str]:
    """CRM fields whose values map_record reads (mapped fields, notes field, id field).

    For HubSpot the names are lower case; compare `name.lower()` against them.
    """
    om = cfg.objects.get((source, object_type))
    return set(om.relevant) if om is not None else set()


def _check_region(region: Any, path: str) -> str:
    if not isinstance(region, str):
        raise MappingError(f"{path}: expected a string, got {_type_name(region)}")
    upper = region.strip().upper()
    if upper not in phonenumbers.SUPPORTED_REGIONS:
        raise MappingError(f"{path}: unknown phone region {region!r} (ISO 3166 code like 'US')")
    return upper


def default_mapping(default_region: str = DEFAULT_REGION) -> MappingConfig:
    """The built-in mapping (see the package docstring), phones parsed with `default_region`."""
    return _compile({}, _check_region(default_region, "default_region"), source_path=None)


def load_mapping(path: Path | None, default_region: str = DEFAULT_REGION) -> MappingConfig:
    """The mapping file at `path` (.toml, .yaml or .yml) merged over the defaults.

    `path=None` gives `default_mapping(default_region)`. A `default_region` in the file
    wins over the argument. Raises MappingError (one line, naming the key) on any problem.
    """
    region = _check_region(default_region, "default_region")
    if path is None:
        return default_mapping(region)
    data = _read(Path(path))
    return _compile(data, region, source_path=str(path))


def _read(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise MappingError(f"{path}: mapping file must end in .toml, .yaml or .yml")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MappingError(f"{path}: cannot read mapping file ({exc.strerror})") from None
    if suffix == ".toml":
        try:
            data: Any = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise MappingError(f"{path}: invalid TOML: {_one_line(exc)}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise MappingError(f"{path}: invalid YAML: {_one_line(exc)}") from None
        if data is None:
            data = {}
    if not isinstance(data, dict):
        raise MappingError(f"{path}: the top level must be a table/mapping")
    return data


def _compile(data: Mapping[Any, Any], region: str, source_path: str | None) -> MappingConfig:
    for key in data:
        if key not in _TOP_KEYS:
            if isinstance(data[key], dict):
                raise MappingError(
                    f"{key}: unknown source {key!r} (expected {_alternatives(SOURCES)})"
                )
            raise MappingError(f"{key}: unknown key{_suggest(key, _TOP_KEYS)}")
    if "default_region" in data:
        region = _check_region(data["default_region"], "default_region")
    clear_policy = data.get("clear_policy", DEFAULT_CLEAR_POLICY)
    if not isinstance(clear_policy, str):
        raise MappingError(f"clear_policy: expected a string, got {_type_name(clear_policy)}")
    if clear_policy not in CLEAR_POLICIES:
        raise MappingError(
            f"clear_policy: unsupported value {clear_policy!r} (only 'skip': LeadLex's "
            "handling of null/empty values is undocumented, so clears are never sent)"
        )
    max_length = _positive_int(data, "max_length", DEFAULT_MAX_LENGTH)
    max_notes_length = _positive_int(data, "max_notes_length", DEFAULT_MAX_NOTES_LENGTH)

    objects: dict[tuple[str, str], ObjectMapping] = {}
    for source in SOURCES:
        section = _table(data.get(source, {}), source)
        for key in section:
            if key not in _SOURCE_KEYS:
                if isinstance(section[key], dict):
                    raise MappingError(
                        f"{source}.{key}: unknown object type {key!r} "
                        f"(expected {_alternatives(OBJECT_TYPES)})"
                    )
                raise MappingError(f"{source}.{key}: unknown key{_suggest(key, _SOURCE_KEYS)}")
        source_settings = _settings(section, source, DEFAULT_SOURCE_SETTINGS[source])
        for object_type in OBJECT_TYPES:
            default_fields = DEFAULT_FIELDS.get((source, object_type))
            if object_type not in section and default_fields is None:
                continue
            obj = _table(section.get(object_type, {}), f"{source}.{object_type}")
            for key in obj:
                if key not in _OBJECT_KEYS:
                    raise MappingError(
                        f"{source}.{object_type}.{key}: unknown key{_suggest(key, _OBJECT_KEYS)}"
                    )
            settings = _settings(obj, f"{source}.{object_type}", source_settings)
            fields = _fields(
                obj.get("fields", {}),
                f"{source}.{object_type}.fields",
                dict(default_fields or {}),
                fold=source in CASE_INSENSITIVE_SOURCES,
            )
            objects[(source, object_type)] = ObjectMapping.build(
                source, object_type, fields, settings
            )
    return MappingConfig(
        objects=MappingProxyType(objects),
        default_region=region,
        clear_policy=clear_policy,
        max_length=max_length,
        max_notes_length=max_notes_length,
        source_path=source_path,
    )


def _settings(section: Mapping[str, Any], path: str, base: SourceSettings) -> SourceSettings:
    id_field = base.leadlex_id_field
    if "leadlex_id_field" in section:
        id_field = _optional_name(section["leadlex_id_field"], f"{path}.leadlex_id_field")
    notes = base.notes
    if "notes" in section:
        table = _table(section["notes"], f"{path}.notes")
        for key in table:
            if key not in _NOTES_KEYS:
                raise MappingError(f"{path}.notes.{key}: unknown key{_suggest(key, _NOTES_KEYS)}")
        note_field = notes.field
        if "field" in table:
            note_field = _optional_name(table["field"], f"{path}.notes.field")
        prefix = notes.prefix
        if "prefix" in table:
            prefix = table["prefix"]
            if not isinstance(prefix, str):
                raise MappingError(
                    f"{path}.notes.prefix: expected a string, got {_type_name(prefix)}"
                )
        enabled = notes.enabled
        if "enabled" in table:
            enabled = table["enabled"]
            if not isinstance(enabled, bool):
                raise MappingError(
                    f"{path}.notes.enabled: expected true or false, got {_type_name(enabled)}"
                )
        notes = NotesSpec(note_field, prefix, enabled and note_field is not None)
    return SourceSettings(id_field, notes)


def _fields(
    raw: Any, path: str, fields: dict[str, str | None], *, fold: bool
) -> dict[str, str | None]:
    table = _table(raw, path)
    seen: dict[str, str] = {}
    for crm, target in table.items():
        if not isinstance(crm, str) or not crm.strip():
            raise MappingError(f"{path}: CRM field names must be non-empty strings, got {crm!r}")
        key_path = f"{path}.{crm}"
        name = crm.strip()
        if fold:
            name = name.lower()
            if name in seen:
                raise MappingError(
                    f"{key_path}: duplicate of {seen[name]!r} (HubSpot names ignore case)"
                )
            seen[name] = crm
            # A default spelled differently only by case is replaced, not duplicated.
            for existing in [k for k in fields if k.lower() == name and k != name]:
                del fields[existing]
        if target is False or target is None or target == "":
            fields.pop(name, None)
            continue
        if not isinstance(target, str):
            raise MappingError(
                f"{key_path}: expected a LeadLex field name or false, got {_type_name(target)}"
            )
        if target not in LEADLEX_FIELDS:
            hint = (
                f" (notes are configured in [{path.split('.')[0]}.notes])"
                if target == "notes"
                else _suggest(target, LEADLEX_FIELDS)
            )
            raise MappingError(f"{key_path}: unknown LeadLex field {target!r}{hint}")
        fields[name] = target
    return fields


def _table(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MappingError(f"{path}: expected a table/mapping, got {_type_name(value)}")
    return value


def _optional_name(value: Any, path: str) -> str | None:
    if value is False or value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        raise MappingError(f"{path}: expected a CRM field name or false, got {_type_name(value)}")
    return value.strip()


def _positive_int(data: Mapping[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MappingError(f"{key}: expected a positive integer, got {value!r}")
    return value


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return names.get(type(value), type(value).__name__)


def _suggest(word: Any, options: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (expected {_alternatives(options)})"


def _alternatives(options: tuple[str, ...]) -> str:
    return ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
