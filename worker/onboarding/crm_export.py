"""Read a CRM export (pure apart from iterating the text it is given).

Profiles name the columns of the two exports people actually download; any role can be
renamed (`leadlex-sync links match --column ROLE=HEADER`). Roles:

| role        | HubSpot contacts export | Salesforce report export (Contacts & Accounts) |
|-------------|-------------------------|------------------------------------------------|
| object_id   | Record ID               | Contact ID                                     |
| first_name  | First Name              | First Name                                     |
| last_name   | Last Name               | Last Name                                      |
| email       | Email                   | Email                                          |
| phone       | Phone Number            | Phone                                          |
| mobile      | Mobile Phone Number     | Mobile                                         |
| company     | Company Name            | Account Name                                   |
| job_title   | Job Title               | Title                                          |
| notes       | (none: --column notes=HEADER, used by `backfill --notes` only)           |

Header names are compared case-insensitively with whitespace collapsed; a UTF-8 BOM is
dropped. `object_id` is required; a row without one is reported invalid. Salesforce
report ids are 15 characters: they are turned into the 18-character form events carry.
`properties` maps each row to the CRM's API property names (the mapping's names), which
backfill feeds to the normal ingest path.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from worker.salesforce_ids import SalesforceIdError, to_18

ROLES: tuple[str, ...] = (
    "object_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "mobile",
    "company",
    "job_title",
    "notes",  # no default header: name it (--column notes=HEADER) to backfill notes
)

PROFILES: dict[str, dict[str, str]] = {
    "hubspot": {
        "object_id": "Record ID",
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "Email",
        "phone": "Phone Number",
        "mobile": "Mobile Phone Number",
        "company": "Company Name",
        "job_title": "Job Title",
    },
    "salesforce": {
        "object_id": "Contact ID",
        "first_name": "First Name",
        "last_name": "Last Name",
        "email": "Email",
        "phone": "Phone",
        "mobile": "Mobile",
        "company": "Account Name",
        "job_title": "Title",
    },
}

# role -> the CRM's API property name (what the mapping and ChangeEvents use).
PROPERTIES: dict[str, dict[str, str]] = {
    "hubspot": {
        "first_name": "firstname",
        "last_name": "lastname",
        "email": "email",
        "phone": "phone",
        "company": "company",
        "job_title": "jobtitle",
    },
    "salesforce": {
        "first_name": "FirstName",
        "last_name": "LastName",
        "email": "Email",
        "phone": "Phone",
        "job_title": "Title",
    },
}


class ExportFormatError(ValueError):
    """The file is not an export this profile can read (says which column is missing)."""


@dataclass(frozen=True)
class CrmRow:
    """One record of the export."""

    line: int
    object_id: str
    values: Mapping[str, str] = field(default_factory=dict)  # role -> text as exported

    def get(self, role: str) -> str:
        return self.values.get(role, "")

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.get("first_name"), self.get("last_name")) if p)


@dataclass(frozen=True)
class InvalidRow:
    line: int
    reason: str


def _norm(header: str) -> str:
    return " ".join(header.replace("\ufeff", "").split()).casefold()


def columns_for(source: str, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """role -> header for `source`, with overrides applied (ValueError on an unknown role)."""
    if source not in PROFILES:
        raise ValueError(f"source must be one of {', '.join(PROFILES)}")
    columns = dict(PROFILES[source])
    for role, header in (overrides or {}).items():
        if role not in ROLES:
            raise ValueError(f"unknown column role {role!r}; roles: {', '.join(ROLES)}")
        columns[role] = header
    return columns


def read_export(
    lines: Iterable[str], source: str, overrides: Mapping[str, str] | None = None
) -> Iterator[CrmRow | InvalidRow]:
    """The export's rows, in file order (ExportFormatError when object_id's column is missing)."""
    columns = columns_for(source, overrides)
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise ExportFormatError("the file is empty")
    index = {_norm(h): i for i, h in reversed(list(enumerate(header)))}
    at: dict[str, int] = {}
    for role, name in columns.items():
        if _norm(name) in index:
            at[role] = index[_norm(name)]
    if "object_id" not in at:
        raise ExportFormatError(
            f"no column {columns['object_id']!r} (the record id); use --column object_id=HEADER"
        )
    if not ({"email", "phone", "mobile"} & at.keys()):
        raise ExportFormatError(
            f"neither {columns['email']!r} nor {columns['phone']!r} is a column; "
            "use --column email=HEADER or --column phone=HEADER"
        )
    for lineno, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue
        values = {r: cells[i].strip() for r, i in at.items() if i < len(cells)}
        object_id = values.pop("object_id", "")
        if not object_id or ":" in object_id:
            yield InvalidRow(lineno, "record id is empty or contains ':'")
            continue
        if source == "salesforce":
            try:
                object_id = to_18(object_id)
            except SalesforceIdError as exc:
                yield InvalidRow(lineno, f"record id {object_id!r}: {exc}")
                continue
        yield CrmRow(lineno, object_id, {k: v for k, v in values.items() if v})


def properties(row: CrmRow, source: str) -> dict[str, str]:
    """The row's values under the CRM's API property names (only roles the CRM maps)."""
    names = PROPERTIES[source]
    return {names[r]: v for r, v in row.values.items() if r in names}
