"""Backfill planning (pure): which linked records differ from LeadLex, what it costs, when done.

A CRM export row is mapped with the active mapping exactly as ingest would map it (a
snapshot of the row's properties) and compared with the contact's row in LeadLex's export
(`drift.differing`). Only differing fields are sent, and with them every CRM property that
feeds them (both name parts for `full_name`), so one record costs at most one PATCH and a
record already equal costs nothing. Notes are write-only in LeadLex, so they cannot be
compared: with `notes=True` a row's notes text is sent (appended once) in its record's
PATCH, and a record whose only change is its notes costs one PATCH too.

Cost and time: each planned record is one LeadLex call; `per_day` = floor(share * daily
limit) are released per UTC day (see `worker.onboarding.backfill`), so the backfill takes
ceil(records / per_day) days; `finish_at` gives the expected end from a moment and what was
already released that day.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from worker.mapping import MappingConfig, map_record
from worker.onboarding.crm_export import CrmRow, properties
from worker.onboarding.drift import differing
from worker.onboarding.matching import LeadLexContact

DAY_SECONDS = 86_400


@dataclass(frozen=True)
class BackfillItem:
    object_id: str
    contact: str
    changes: dict[str, str]  # CRM property -> value, what the backfill event carries
    fields: tuple[str, ...]  # LeadLex fields that differ (plus "notes" when sent)


@dataclass
class BackfillPlan:
    items: list[BackfillItem] = field(default_factory=list)
    equal: int = 0  # linked records LeadLex already agrees with
    unlinked: int = 0  # rows without a link (run `links match` first)
    missing: int = 0  # linked contacts not in LeadLex's export

    @property
    def calls(self) -> int:
        return len(self.items)

    def fields(self) -> int:
        return sum(len(i.fields) for i in self.items)


def per_day(share: float, daily_limit: int) -> int:
    """Records released per UTC day at this share (at least one)."""
    return max(1, math.floor(share * daily_limit + 1e-9))


def days_needed(records: int, per_day_records: int) -> int:
    return math.ceil(records / per_day_records) if records else 0


def finish_at(
    remaining: int,
    per_day_records: int,
    released_today: int,
    now: float,
    seconds_per_record: float,
    day_seconds: int = DAY_SECONDS,
) -> float:
    """When the last of `remaining` records is expected to be released (epoch seconds):
    what is left of today's allowance goes now at `seconds_per_record`, the rest from each
    following day boundary (00:00 UTC)."""
    if remaining <= 0:
        return now
    left_today = max(0, per_day_records - released_today)
    if remaining <= left_today:
        return now + remaining * seconds_per_record
    remaining -= left_today
    full_days = math.ceil(remaining / per_day_records)
    last_day_start = (math.floor(now / day_seconds) + full_days) * day_seconds
    on_last_day = remaining - (full_days - 1) * per_day_records
    return last_day_start + on_last_day * seconds_per_record


def _feeders(cfg: MappingConfig, source: str, props: Mapping[str, str]) -> dict[str, set[str]]:
    """LeadLex field -> the row's CRM properties that feed it."""
    snapshot = {k: (v, 1) for k, v in props.items()}
    out: dict[str, set[str]] = {}
    for name in props:
        result = map_record(cfg, source, "contact", snapshot, [name])
        for leadlex_field in result.fields:
            out.setdefault(leadlex_field, set()).add(name)
    return out


def plan_backfill(
    rows: Iterable[CrmRow],
    *,
    source: str,
    cfg: MappingConfig,
    links: Mapping[str, str],
    leadlex: Mapping[str, LeadLexContact],
    region: str,
    notes_property: str | None = None,
) -> BackfillPlan:
    """Plan the backfill of `rows` (links: object_id -> contact; leadlex: id -> contact).
    `notes_property`: the CRM notes property to send from a row's `notes` value (None: no
    notes)."""
    plan = BackfillPlan()
    for row in rows:
        contact_id = links.get(row.object_id)
        if not contact_id:
            plan.unlinked += 1
            continue
        contact = leadlex.get(contact_id)
        if contact is None:
            plan.missing += 1
            continue
        props = properties(row, source)
        snapshot = {k: (v, 1) for k, v in props.items()}
        mapped = map_record(cfg, source, "contact", snapshot, list(props))
        want = {k: v.value for k, v in mapped.fields.items()}
        diff = differing(want, contact.fields, region)
        changes: dict[str, str] = {}
        if diff:
            feeders = _feeders(cfg, source, props)
            for leadlex_field in diff:
                for prop in sorted(feeders.get(leadlex_field, ())):
                    changes[prop] = props[prop]
        fields = tuple(diff)
        note = row.get("notes") if notes_property else ""
        if notes_property and note:
            changes[notes_property] = note
            fields = (*fields, "notes")
        if not changes:
            plan.equal += 1
            continue
        plan.items.append(BackfillItem(row.object_id, contact_id, changes, fields))
    return plan
