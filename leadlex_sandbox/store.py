"""The contact table and the four shapes LeadLex returns a contact in.

Field names drift between endpoints (reference §6, §12.10) and the store keeps
that drift: list and PATCH answers say `company_name` and list says `created_at`;
get says `company` and `created_date`; create answers a short shape. `notes` is
write-only unless `expose_notes` is on. Timestamps are ISO 8601 UTC with
microseconds, and `updated_date` strictly increases with every write.

Not thread-safe by itself: the caller (SandboxState) holds the sandbox lock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from leadlex_sandbox.errors import validation_error
from leadlex_sandbox.names import derive_names
from leadlex_sandbox.validation import PRIORITIES

STRING_FIELDS: tuple[str, ...] = (
    "full_name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "job_title",
    "company_name",
    "linkedin_url",
    "related_company_id",
    "notes",
    "created_date",
    "updated_date",
)
SEED_FIELDS: frozenset[str] = frozenset(
    (*STRING_FIELDS, "id", "company", "priority", "tags", "custom_fields")
)
SORT_KEYS: tuple[str, ...] = ("created_at", "updated_date", "full_name")
CREATED_DATE_FUTURE = timedelta(hours=24)
CREATED_DATE_PAST = timedelta(days=5 * 365)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with microseconds and a Z: 2026-02-24T15:00:00.123456Z."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime | None:
    """An aware datetime from ISO 8601 text (naive means UTC), or None when invalid."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Contact:
    """One LeadLex contact, with every field any endpoint shows."""

    id: str
    full_name: str
    first_name: str
    last_name: str
    created_date: str
    updated_date: str
    email: str | None = None
    phone: str | None = None
    job_title: str | None = None
    company_name: str | None = None
    linkedin_url: str | None = None
    related_company_id: str | None = None
    priority: int | None = None
    tags: list[str] = field(default_factory=list)
    custom_fields: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    order: int = 0  # insertion order, the tie-breaker for sorting

    def list_view(self) -> dict[str, Any]:
        """Item of GET /v1/contacts (reference §7.1)."""
        return {
            "id": self.id,
            "full_name": self.full_name,
            "email": self.email,
            "phone": self.phone,
            "job_title": self.job_title,
            "company_name": self.company_name,
            "linkedin_url": self.linkedin_url,
            "created_at": self.created_date,
            "updated_date": self.updated_date,
        }

    def get_view(self, *, expose_notes: bool) -> dict[str, Any]:
        """Body of GET /v1/contacts/{id} (reference §7.2)."""
        view: dict[str, Any] = {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "full_name": self.full_name,
            "email": self.email,
            "phone": self.phone,
            "job_title": self.job_title,
            "company": self.company_name,
            "related_company_id": self.related_company_id,
            "linkedin_url": self.linkedin_url,
            "priority": self.priority,
            "tags": list(self.tags),
            "custom_fields": dict(self.custom_fields),
            "created_date": self.created_date,
            "updated_date": self.updated_date,
        }
        if expose_notes:
            view["notes"] = self.notes
        return view

    def patch_view(self, *, expose_notes: bool) -> dict[str, Any]:
        """Body of a PATCH answer (reference §8 and the seed page's example)."""
        view: dict[str, Any] = {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "full_name": self.full_name,
            "email": self.email,
            "phone": self.phone,
            "job_title": self.job_title,
            "company_name": self.company_name,
            "linkedin_url": self.linkedin_url,
            "updated_date": self.updated_date,
        }
        if expose_notes:
            view["notes"] = self.notes
        return view

    def create_view(self) -> dict[str, Any]:
        """Body of a POST /v1/contacts answer (reference §7.3)."""
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "full_name": self.full_name,
            "email": self.email,
            "priority": self.priority,
            "created_date": self.created_date,
        }

    def full_view(self) -> dict[str, Any]:
        """Everything, notes included: what the control endpoints show."""
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "full_name": self.full_name,
            "email": self.email,
            "phone": self.phone,
            "job_title": self.job_title,
            "company_name": self.company_name,
            "linkedin_url": self.linkedin_url,
            "related_company_id": self.related_company_id,
            "priority": self.priority,
            "tags": list(self.tags),
            "custom_fields": dict(self.custom_fields),
            "notes": self.notes,
            "created_date": self.created_date,
            "updated_date": self.updated_date,
        }


class ContactStore:
    """Contacts by id, in insertion order."""

    def __init__(self) -> None:
        self._contacts: dict[str, Contact] = {}
        self._last_stamp = datetime.min.replace(tzinfo=UTC)
        self._order = 0

    def clear(self) -> None:
        """Forget every contact."""
        self._contacts.clear()

    def stamp(self) -> str:
        """Now as ISO 8601, strictly later than any stamp given before."""
        now = datetime.now(UTC)
        if now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return iso(now)

    def get(self, contact_id: str) -> Contact | None:
        """The contact with this id, or None."""
        return self._contacts.get(contact_id)

    def all(self) -> list[Contact]:
        """Every contact, oldest insert first."""
        return list(self._contacts.values())

    def find_by_email(self, email: str) -> Contact | None:
        """A contact whose email matches case-insensitively, or None."""
        wanted = email.casefold()
        for contact in self._contacts.values():
            if contact.email and contact.email.casefold() == wanted:
                return contact
        return None

    def create(self, fields: dict[str, Any]) -> Contact:
        """A new contact from validated POST fields (reference §7.3 rules)."""
        stamp = self.stamp()
        full, first, last = derive_names(
            fields.get("full_name"),
            fields.get("first_name"),
            fields.get("last_name"),
            fields.get("email"),
        )
        contact = Contact(
            id=str(uuid.uuid4()),
            full_name=full,
            first_name=first,
            last_name=last,
            created_date=self._created_date(fields.get("created_date"), stamp),
            updated_date=stamp,
            email=fields.get("email"),
            phone=fields.get("phone"),
            job_title=fields.get("job_title"),
            company_name=fields.get("company"),
            linkedin_url=fields.get("linkedin_url"),
            related_company_id=fields.get("related_company_id"),
            priority=fields.get("priority"),
            tags=list(fields.get("tags", [])),
            custom_fields=dict(fields.get("custom_fields", {})),
        )
        return self._insert(contact)

    def update(self, contact: Contact, changes: dict[str, str | None], separator: str) -> None:
        """Apply PATCH changes: notes append, full_name re-derives names, the rest overwrite."""
        for name, value in changes.items():
            if name == "notes":
                if value:
                    contact.notes = f"{contact.notes}{separator}{value}" if contact.notes else value
            elif name == "full_name" and value is not None:
                contact.full_name, contact.first_name, contact.last_name = derive_names(
                    value, None, None, None
                )
            else:
                setattr(contact, name, value)
        contact.updated_date = self.stamp()

    def delete(self, contact_id: str) -> bool:
        """Remove a contact; False when there was none."""
        return self._contacts.pop(contact_id, None) is not None

    def search(
        self, text: str | None, sort: str = "created_at", created_after: datetime | None = None
    ) -> list[Contact]:
        """Contacts whose full_name or email contains `text` (case-insensitive), sorted."""
        found = self.all()
        if text:
            needle = text.casefold()
            found = [
                c
                for c in found
                if needle in c.full_name.casefold() or needle in (c.email or "").casefold()
            ]
        if created_after is not None:
            found = [c for c in found if _moment(c.created_date) > created_after]
        descending = sort.startswith("-")
        key = sort.lstrip("-")
        found.sort(key=lambda c: c.order)
        if key == "full_name":
            found.sort(key=lambda c: c.full_name.casefold(), reverse=descending)
        elif key == "updated_date":
            found.sort(key=lambda c: _moment(c.updated_date), reverse=descending)
        else:
            found.sort(key=lambda c: _moment(c.created_date), reverse=descending)
        return found

    def seed(self, record: Any) -> Contact:
        """A contact from a control-endpoint record: trusted data, light type checks only."""
        if not isinstance(record, dict):
            raise validation_error({"contact": "Must be a JSON object"})
        errors = {k: "Unknown field" for k in record if k not in SEED_FIELDS}
        for name in (*STRING_FIELDS, "id", "company"):
            if record.get(name) is not None and not isinstance(record[name], str):
                errors[name] = "Must be a string"
        contact_id = record.get("id") or str(uuid.uuid4())
        if isinstance(contact_id, str) and contact_id in self._contacts:
            errors["id"] = "A contact with this id exists"
        priority = record.get("priority")
        if priority is not None:
            key = priority.lower() if isinstance(priority, str) else priority
            if isinstance(priority, bool) or key not in PRIORITIES:
                errors["priority"] = "Must be high, medium, low or 1, 2, 3"
            else:
                priority = PRIORITIES[key]
        if not isinstance(record.get("tags", []), list):
            errors["tags"] = "Must be a list"
        if not isinstance(record.get("custom_fields", {}), dict):
            errors["custom_fields"] = "Must be a JSON object"
        if errors:
            raise validation_error(errors)
        stamp = self.stamp()
        full, first, last = derive_names(
            record.get("full_name"),
            record.get("first_name"),
            record.get("last_name"),
            record.get("email"),
        )
        contact = Contact(
            id=contact_id,
            full_name=full,
            first_name=first,
            last_name=last,
            created_date=record.get("created_date") or stamp,
            updated_date=record.get("updated_date") or stamp,
            email=record.get("email"),
            phone=record.get("phone"),
            job_title=record.get("job_title"),
            company_name=record.get("company_name") or record.get("company"),
            linkedin_url=record.get("linkedin_url"),
            related_company_id=record.get("related_company_id"),
            priority=priority,
            tags=list(record.get("tags", [])),
            custom_fields=dict(record.get("custom_fields", {})),
            notes=record.get("notes") or "",
        )
        return self._insert(contact)

    def _insert(self, contact: Contact) -> Contact:
        self._order += 1
        contact.order = self._order
        self._contacts[contact.id] = contact
        return contact

    @staticmethod
    def _created_date(given: str | None, stamp: str) -> str:
        """`created_date` verbatim when valid and within [-5 years, +24 h], else now (§7.3)."""
        moment = parse_iso(given) if given else None
        if moment is None:
            return stamp
        now = datetime.now(UTC)
        if now - CREATED_DATE_PAST <= moment <= now + CREATED_DATE_FUTURE:
            return given or stamp
        return stamp


def _moment(text: str) -> datetime:
    return parse_iso(text) or datetime.min.replace(tzinfo=UTC)
