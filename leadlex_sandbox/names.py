"""Name derivation, as LeadLex's data-integrity page describes it (reference §7.3).

- "Last, First" is understood;
- otherwise a full name splits on the LAST whitespace ("Jean-Claude van Damme" ->
  first "Jean-Claude van", last "Damme");
- first + last compose the full name;
- with no name at all, the email's local part gives one ("hans.mueller@..." ->
  Hans / Mueller).
"""

from __future__ import annotations

import re


def split_full_name(full_name: str) -> tuple[str, str]:
    """(first, last) from a full name; last is "" for a single word."""
    text = " ".join(full_name.split())
    if "," in text:
        last, _, first = text.partition(",")
        return first.strip(), last.strip()
    first, _, last = text.rpartition(" ")
    if not first:
        return last, ""
    return first, last


def compose_full_name(first: str | None, last: str | None) -> str:
    """First and last joined by one space, skipping empty parts."""
    return " ".join(part.strip() for part in (first, last) if part and part.strip())


def names_from_email(email: str) -> tuple[str, str]:
    """(first, last) guessed from an email's local part, "" when nothing usable."""
    local = email.split("@", 1)[0].split("+", 1)[0]
    parts = [p for p in re.split(r"[._\-]+", local) if p and not p.isdigit()]
    if not parts:
        return "", ""
    first = parts[0].capitalize()
    last = parts[-1].capitalize() if len(parts) > 1 else ""
    return first, last


def derive_names(
    full_name: str | None, first_name: str | None, last_name: str | None, email: str | None
) -> tuple[str, str, str]:
    """(full, first, last) filled in from whatever is given; explicit parts win."""
    first = (first_name or "").strip()
    last = (last_name or "").strip()
    full = (full_name or "").strip()
    if full:
        split_first, split_last = split_full_name(full)
        return full, first or split_first, last or split_last
    if first or last:
        return compose_full_name(first, last), first, last
    if email:
        first, last = names_from_email(email)
        return compose_full_name(first, last), first, last
    return "", "", ""
