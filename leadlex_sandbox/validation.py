"""Request-body rules for POST and PATCH /v1/contacts (reference §7.3, §8, §12.4).

Every failure becomes one 400 `validation_error` whose `details.fields` maps each
bad field to its reason, all fields reported at once. Where the docs are silent
the stricter rule applies, switchable in SandboxConfig (null, "", unknown fields,
empty body, Content-Type).
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from leadlex_sandbox.config import SandboxConfig
from leadlex_sandbox.errors import validation_error

# PATCH body fields (reference §8). Everything else is an unknown field.
PATCH_FIELDS: tuple[str, ...] = (
    "full_name",
    "email",
    "phone",
    "job_title",
    "company_name",
    "linkedin_url",
    "notes",
)

# POST body fields (reference §7.3, plus the quickstart's `company_name`).
CREATE_STRING_FIELDS: tuple[str, ...] = (
    "full_name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "job_title",
    "company",
    "company_name",
    "linkedin_url",
    "related_company_id",
    "company_id",
    "created_date",
)
CREATE_FIELDS: frozenset[str] = frozenset(
    (*CREATE_STRING_FIELDS, "priority", "tags", "custom_fields")
)

PRIORITIES: dict[Any, int] = {"high": 1, "medium": 2, "low": 3, 1: 1, 2: 2, 3: 3}

_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_PHONE_CHARS = re.compile(r"^\+[1-9][0-9 ().\-]*$")

# A change to one field: the new string, or None for "clear it" (when null/"" are allowed).
Changes = dict[str, str | None]


def email_problem(value: str) -> str | None:
    """Why `value` is not an email address, or None."""
    return None if _EMAIL.fullmatch(value) else "Invalid email format"


def phone_problem(value: str) -> str | None:
    """Why `value` is not a phone number with a country code (E.164-ish), or None."""
    if not value.startswith("+"):
        return "Phone number must include a country code (e.g. +1 555 123 4567)"
    digits = sum(ch.isdigit() for ch in value)
    if not _PHONE_CHARS.fullmatch(value) or not 8 <= digits <= 15:
        return "Invalid phone number format"
    return None


def linkedin_problem(value: str) -> str | None:
    """Why `value` is not an http(s) URL of a linkedin.com page, or None."""
    try:
        parts = urlsplit(value)
        host = (parts.hostname or "").lower()
    except ValueError:
        return "Invalid LinkedIn URL"
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        return "Invalid LinkedIn URL"
    if host != "linkedin.com" and not host.endswith(".linkedin.com"):
        return "Must be a linkedin.com URL"
    if parts.path.strip("/") == "":
        return "Must be a LinkedIn profile URL"
    return None


def uuid_problem(value: str) -> str | None:
    """Why `value` is not a UUID, or None."""
    try:
        uuid.UUID(value)
    except ValueError:
        return "Must be a UUID"
    return None


_FORMATS = {
    "email": email_problem,
    "phone": phone_problem,
    "linkedin_url": linkedin_problem,
    "related_company_id": uuid_problem,
    "company_id": uuid_problem,
}


def _string_value(
    name: str, value: Any, config: SandboxConfig, errors: dict[str, str]
) -> tuple[bool, str | None]:
    """(keep, value): keep=False means "skip this field"; value None means "clear it"."""
    if value is None:
        if config.reject_null:
            errors[name] = "Must be a string, not null"
            return False, None
        return True, None
    if not isinstance(value, str):
        errors[name] = "Must be a string"
        return False, None
    if not value.strip():
        if config.reject_empty_string:
            errors[name] = "Must not be empty"
            return False, None
        return True, None
    limit = config.notes_max_length if name == "notes" else config.max_field_length
    if len(value) > limit:
        errors[name] = f"Must be at most {limit} characters"
        return False, None
    check = _FORMATS.get(name)
    problem = check(value) if check else None
    if problem:
        errors[name] = problem
        return False, None
    return True, value


def parse_patch(body: Any, config: SandboxConfig) -> Changes:
    """The changes a PATCH body asks for; raises 400 validation_error naming bad fields."""
    if not isinstance(body, dict):
        raise validation_error({"body": "Must be a JSON object"})
    errors: dict[str, str] = {}
    changes: Changes = {}
    for name, value in body.items():
        if name not in PATCH_FIELDS:
            if config.reject_unknown_fields:
                errors[name] = "Unknown field"
            continue
        keep, text = _string_value(name, value, config, errors)
        if not keep:
            continue
        if text is None and name == "full_name":
            errors[name] = "Must not be blank"
        elif text is None and name == "notes":
            continue  # nothing to append
        else:
            changes[name] = text
    if not errors and not changes and config.reject_empty_body:
        errors["body"] = "At least one field is required"
    if errors:
        raise validation_error(errors)
    return changes


def parse_create(body: Any, config: SandboxConfig) -> dict[str, Any]:
    """The fields of a POST /v1/contacts body; raises 400 validation_error naming bad fields."""
    if not isinstance(body, dict):
        raise validation_error({"body": "Must be a JSON object"})
    errors: dict[str, str] = {}
    fields: dict[str, Any] = {}
    for name, value in body.items():
        if name not in CREATE_FIELDS:
            if config.reject_unknown_fields:
                errors[name] = "Unknown field"
            continue
        if name in CREATE_STRING_FIELDS:
            keep, text = _string_value(name, value, config, errors)
            if keep and text is not None:
                fields[name] = text
        elif value is None:
            if config.reject_null:
                errors[name] = "Must not be null"
        elif name == "priority":
            key = value.lower() if isinstance(value, str) else value
            if isinstance(value, bool) or key not in PRIORITIES:
                errors[name] = "Must be high, medium, low or 1, 2, 3"
            else:
                fields[name] = PRIORITIES[key]
        elif name == "tags":
            if not isinstance(value, list) or not all(
                isinstance(t, str) and t.strip() and len(t) <= config.max_field_length
                for t in value
            ):
                errors[name] = "Must be a list of non-empty strings"
            else:
                fields[name] = list(value)
        elif name == "custom_fields":
            if not isinstance(value, dict):
                errors[name] = "Must be a JSON object"
            else:
                fields[name] = value
    _merge_alias(fields, errors, "company", "company_name")
    _merge_alias(fields, errors, "related_company_id", "company_id")
    if not errors and not any(
        fields.get(n) for n in ("first_name", "last_name", "full_name", "email")
    ):
        errors["full_name"] = (
            "At least one of first_name, last_name, full_name or email is required"
        )
    if errors:
        raise validation_error(errors)
    return fields


def _merge_alias(fields: dict[str, Any], errors: dict[str, str], name: str, alias: str) -> None:
    """Fold `alias` into `name`; both given with different values is an error."""
    if alias not in fields:
        return
    value = fields.pop(alias)
    if name in fields and fields[name] != value:
        errors[alias] = f"Conflicts with {name}"
    else:
        fields[name] = value
