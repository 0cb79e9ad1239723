"""Match keys (pure): what two spellings of the same person have in common.

- email: stripped, case-folded (LeadLex and every CRM treat addresses case-insensitively),
  `mailto:` and angle brackets dropped; invalid text gives no key.
- phone: E.164 through `worker.mapping.normalize_phone`, numbers without "+" read in the
  default region (`DEFAULT_PHONE_REGION`); extensions dropped; impossible numbers give no key.
- name + company: case-folded, accents and punctuation dropped, whitespace collapsed; the
  company without a trailing legal form (Inc, LLC, Ltd, GmbH, ...). Both parts required.
"""

from __future__ import annotations

import re
import unicodedata

from worker.mapping import normalize_email, normalize_phone

_LEGAL_FORMS = frozenset(
    {
        *("inc", "incorporated", "llc", "ltd", "limited", "gmbh", "ag", "sa", "sas"),
        *("sarl", "bv", "nv", "plc", "corp", "corporation", "co", "company", "oy"),
        *("ab", "as", "srl", "spa", "kg"),
    }
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def email_key(value: str | None) -> str | None:
    """The address case-folded, or None when there is none or it is not an address."""
    if not value:
        return None
    text = value.strip().strip("<>").strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    try:
        return normalize_email(text).casefold()
    except ValueError:
        return None


def phone_key(value: str | None, region: str) -> str | None:
    """E.164, or None when there is none or it is not a possible full number."""
    if not value or not value.strip():
        return None
    try:
        return normalize_phone(value, region)
    except ValueError:
        return None


def _words(value: str) -> list[str]:
    text = unicodedata.normalize("NFKD", value)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _WORD.findall(text.casefold())


def name_key(full_name: str | None) -> str | None:
    words = _words(full_name or "")
    return " ".join(words) if words else None


def company_key(company: str | None) -> str | None:
    words = _words(company or "")
    while len(words) > 1 and words[-1] in _LEGAL_FORMS:
        words.pop()
    return " ".join(words) if words else None


def name_company_key(full_name: str | None, company: str | None) -> str | None:
    """ "name|company" when both are known, else None."""
    name, firm = name_key(full_name), company_key(company)
    return f"{name}|{firm}" if name and firm else None
