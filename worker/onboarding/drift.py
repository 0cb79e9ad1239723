"""Drift between what the CRM says and what LeadLex holds (pure).

`comparable(field, value)` puts a LeadLex field's value in the form two spellings of the same
value share: e-mail case-folded, phone E.164 (default region), LinkedIn URL normalized,
text cleaned (whitespace). `differing(want, have)` names the fields of `want` whose value
LeadLex does not hold. `explain` gives the reason a drifted field is thought to differ, the
first that applies:

| reason         | when                                                                       |
|----------------|----------------------------------------------------------------------------|
| `parked`       | the CRM record has events parked (no link yet, or dated before its deletion) |
| `dead_letter`  | a dead letter for the contact names the field (or the whole contact)        |
| `pending`      | the field is staged and waits for its flush (coalescing, budget)            |
| `edited_in_leadlex` | we wrote exactly this value (applied) and LeadLex shows another: edited |
|                | in LeadLex after our write                                                  |
| `never_arrived`| we know the CRM value but never wrote it: the change never reached LeadLex  |
|                | (lost before we acknowledged it, older than the link, or never sent)       |
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from worker.mapping import normalize_email, normalize_linkedin_url, normalize_phone
from worker.mapping.normalize import clean_text

COMPARED_FIELDS: tuple[str, ...] = (
    "full_name",
    "email",
    "phone",
    "job_title",
    "company_name",
    "linkedin_url",
)
REASONS: tuple[str, ...] = (
    "parked",
    "dead_letter",
    "pending",
    "edited_in_leadlex",
    "never_arrived",
)


def comparable(field: str, value: str | None, region: str) -> str:
    """`value` in its comparable form ("" for none)."""
    text = clean_text(value or "")
    if not text:
        return ""
    try:
        if field == "email":
            return normalize_email(text).casefold()
        if field == "phone":
            return normalize_phone(text, region)
        if field == "linkedin_url":
            return normalize_linkedin_url(text)
    except ValueError:
        return text
    return text


def differing(
    want: Mapping[str, str | None], have: Mapping[str, str | None], region: str
) -> dict[str, str]:
    """Fields of `want` (compared fields only, non-empty) whose value `have` does not hold."""
    out: dict[str, str] = {}
    for field, value in want.items():
        if field not in COMPARED_FIELDS or not value:
            continue
        if comparable(field, value, region) != comparable(field, have.get(field), region):
            out[field] = value
    return out


@dataclass(frozen=True)
class Evidence:
    """What the product knows about one contact besides the values."""

    parked: bool = False
    dead_letter_fields: Collection[str] = ()  # "*" = a letter about the whole contact
    staged_fields: Collection[str] = ()
    applied: Mapping[str, str | None] | None = None  # field -> value we last wrote


def explain(field: str, crm_value: str, evidence: Evidence, region: str) -> str:
    """Why `field` is thought to differ (see the table in the module docstring)."""
    if evidence.parked:
        return "parked"
    if field in evidence.dead_letter_fields or "*" in evidence.dead_letter_fields:
        return "dead_letter"
    if field in evidence.staged_fields:
        return "pending"
    applied = (evidence.applied or {}).get(field)
    if applied is not None and comparable(field, applied, region) == comparable(
        field, crm_value, region
    ):
        return "edited_in_leadlex"
    return "never_arrived"
