"""Match CRM rows to LeadLex contacts (pure).

Order of rules, first that decides wins: (1) normalized email, (2) E.164 phone (the row's
phone and mobile), (3) name + company, only when asked (`use_name_company`). A rule that
finds exactly one contact matches; more than one makes the row **ambiguous** (never
linked automatically, reported with the candidates); none passes on to the next rule.
Afterwards a contact matched by several rows, or already linked to another record of the
same source, makes those rows ambiguous too. A record that already has a link is
reported `already_linked` and left alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from worker.onboarding.crm_export import CrmRow
from worker.onboarding.keys import email_key, name_company_key, phone_key

MATCHED = "matched"
AMBIGUOUS = "ambiguous"
UNMATCHED = "unmatched"
ALREADY_LINKED = "already_linked"
STATUSES: tuple[str, ...] = (MATCHED, AMBIGUOUS, UNMATCHED, ALREADY_LINKED)


@dataclass(frozen=True)
class LeadLexContact:
    """A LeadLex contact as the export (or the list) shows it."""

    id: str
    full_name: str = ""
    email: str = ""
    phone: str = ""
    company_name: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)  # every exported column


@dataclass
class Match:
    row: CrmRow
    status: str
    leadlex_id: str = ""
    rule: str = ""  # email | phone | name_company
    candidates: tuple[str, ...] = ()
    reason: str = ""


@dataclass
class MatchReport:
    matches: list[Match]

    def by_status(self, status: str) -> list[Match]:
        return [m for m in self.matches if m.status == status]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for m in self.matches:
            out[m.status] += 1
        return out

    def rules(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for m in self.by_status(MATCHED):
            out[m.rule] += 1
        return dict(out)


class ContactIndex:
    """LeadLex contacts by email, phone and name + company keys."""

    def __init__(self, contacts: Iterable[LeadLexContact], region: str) -> None:
        self.region = region
        self.email: dict[str, list[str]] = defaultdict(list)
        self.phone: dict[str, list[str]] = defaultdict(list)
        self.name_company: dict[str, list[str]] = defaultdict(list)
        self.contacts: dict[str, LeadLexContact] = {}
        for c in contacts:
            self.contacts[c.id] = c
            if key := email_key(c.email):
                self.email[key].append(c.id)
            if key := phone_key(c.phone, region):
                self.phone[key].append(c.id)
            if key := name_company_key(c.full_name, c.company_name):
                self.name_company[key].append(c.id)


def _unique(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


def match_row(row: CrmRow, index: ContactIndex, *, use_name_company: bool) -> Match:
    """One row against the index (before the many-rows-one-contact check)."""
    email = email_key(row.get("email"))
    if email and (found := _unique(index.email.get(email, ()))):
        if len(found) == 1:
            return Match(row, MATCHED, found[0], "email")
        return Match(row, AMBIGUOUS, "", "email", found, f"{len(found)} contacts share this email")
    phones = [phone_key(row.get(r), index.region) for r in ("phone", "mobile")]
    found = _unique(i for p in phones if p for i in index.phone.get(p, ()))
    if len(found) == 1:
        return Match(row, MATCHED, found[0], "phone")
    if found:
        return Match(row, AMBIGUOUS, "", "phone", found, f"{len(found)} contacts share this phone")
    if use_name_company:
        key = name_company_key(row.full_name, row.get("company"))
        found = _unique(index.name_company.get(key, ())) if key else ()
        if len(found) == 1:
            return Match(row, MATCHED, found[0], "name_company")
        if found:
            reason = f"{len(found)} contacts share this name and company"
            return Match(row, AMBIGUOUS, "", "name_company", found, reason)
    return Match(row, UNMATCHED, reason="no contact with this email or phone")


def match_rows(
    rows: Iterable[CrmRow],
    index: ContactIndex,
    *,
    linked: Mapping[str, str],
    linked_to: Mapping[str, set[str]] | None = None,
    use_name_company: bool = False,
) -> MatchReport:
    """Match every row. `linked`: object_id -> LeadLex id of records of this source that
    already have a link; `linked_to`: LeadLex id -> object ids of this source linked to it."""
    linked_to = linked_to or {}
    matches: list[Match] = []
    for row in rows:
        existing = linked.get(row.object_id)
        if existing:
            matches.append(Match(row, ALREADY_LINKED, existing, "link"))
        else:
            matches.append(match_row(row, index, use_name_company=use_name_company))
    claims: dict[str, list[Match]] = defaultdict(list)
    for m in matches:
        if m.status == MATCHED:
            claims[m.leadlex_id].append(m)
    for contact, claimed in claims.items():
        others = set(linked_to.get(contact, set()))
        if len(claimed) > 1:
            lines = ", ".join(str(m.row.line) for m in claimed)
            for m in claimed:
                m.status, m.candidates = AMBIGUOUS, (contact,)
                m.reason = f"contact matched by several rows (lines {lines})"
        elif others:
            m = claimed[0]
            m.status, m.candidates = AMBIGUOUS, (contact,)
            m.reason = f"contact already linked to record {sorted(others)[0]}"
    return MatchReport(matches)
