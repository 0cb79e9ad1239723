"""Reconcile (I/O): LeadLex's export against the newest CRM values the product knows.

For every link (source, account, object id -> LeadLex contact) with a record snapshot
(`lls:snap:*`, the newest value of each CRM field we received), the snapshot is mapped to
LeadLex fields with the active mapping and compared with the contact's row in one export
(`worker.onboarding.drift`). Each differing field gets a reason. Records we never received
a value for are counted (`without_values`), not guessed; links to contacts missing from
the export are counted (`missing`).

The result is kept in `lls:drift` (hash: `fields`, `contacts`, `at`, `reasons` JSON, `calls`,
`via`), read by `/metrics` (`leadlex_sync_drift_fields`) and `leadlex-sync status`.

The daily task (`run_daily`) reads LeadLex by the export; when the export is refused it uses
the paged list only if the whole list costs at most `LIST_SHARE` of the plan's daily calls
(its first page, one call, tells the cost); otherwise, or when LeadLex cannot be read, it
skips: the reason is kept in `lls:drift:skipped` (`reason`, `at`), shown by `status`, and
counted (`leadlex_sync_reconcile_skipped`).

`repair` stages the CRM values of drifted fields through the normal path: the fields'
applied values are forgotten (so the flush's no-op check cannot drop them), the values
are staged with their CRM times (the staging Lua still refuses anything older than what
is staged or applied) and the contact is scheduled for one budgeted, coalesced flush.
Parked and dead-lettered fields are left to their own paths (`links`, `dlq replay`);
pending fields are already on their way.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from worker.mapping import map_record
from worker.onboarding.drift import COMPARED_FIELDS, REASONS, Evidence, differing, explain
from worker.onboarding.matching import LeadLexContact
from worker.pipeline.runtime import Runtime
from worker.state import NOTES_PREFIX

DRIFT_KEY = "lls:drift"
SKIPPED_KEY = "lls:drift:skipped"
LIST_SHARE = 0.1  # the daily reconcile's paged-list fallback may cost this share of a day
REPAIRABLE = frozenset({"edited_in_leadlex", "never_arrived"})


@dataclass(frozen=True)
class Drift:
    source: str
    account: str
    object_id: str
    contact: str
    field: str
    crm_value: str
    crm_ts_ms: int
    leadlex_value: str
    reason: str

    @property
    def record(self) -> str:
        return f"{self.source}:{self.account}:{self.object_id}"


@dataclass
class ReconcileReport:
    drifts: list[Drift] = field(default_factory=list)
    compared: int = 0  # linked records compared
    without_values: int = 0  # linked records we never received a value for
    missing: list[str] = field(default_factory=list)  # linked contacts not in the export
    calls: int = 0  # LeadLex calls spent reading the directory
    via: str = "export"  # or "list" (the paged list, when the export was refused)

    def by_reason(self) -> dict[str, int]:
        out = dict.fromkeys(REASONS, 0)
        for d in self.drifts:
            out[d.reason] += 1
        return out

    def contacts(self) -> int:
        return len({d.contact for d in self.drifts})


def _snapshot_keys(client: redis.Redis) -> dict[tuple[str, str], list[str]]:
    """(source, object_id) -> record keys with a snapshot (account as events carry it)."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for raw in client.scan_iter(match="lls:snap:*", count=1000):
        record = (raw.decode() if isinstance(raw, bytes) else str(raw))[len("lls:snap:") :]
        source, _, rest = record.partition(":")
        _account, _, object_id = rest.partition(":")
        out[(source, object_id)].append(record)
    return out


def _dead_letter_fields(rt: Runtime) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for letter in rt.dlq.iter():
        if letter.contact:
            out[letter.contact].add(str(letter.details.get("field") or "*"))
    return out


def crm_fields(rt: Runtime, source: str, record: str) -> dict[str, tuple[str, int]]:
    """The record's snapshot mapped to LeadLex fields: field -> (value, CRM time)."""
    snapshot = rt.state.snapshot(record)
    if not snapshot:
        return {}
    result = map_record(rt.mapping, source, "contact", snapshot, list(snapshot))
    return {k: (v.value, v.ts_ms) for k, v in result.fields.items() if k in COMPARED_FIELDS}


def reconcile(rt: Runtime, contacts: Iterable[LeadLexContact]) -> ReconcileReport:
    """Compare every linked record with its LeadLex contact (see the module docstring)."""
    region = rt.settings.default_phone_region
    by_id = {c.id: c for c in contacts}
    snaps = _snapshot_keys(rt.redis)
    letters = _dead_letter_fields(rt)
    report = ReconcileReport()
    for source, account, object_id, contact_id in rt.state.iter_links():
        records = [
            r
            for r in snaps.get((source, object_id), [])
            if not account or r.split(":", 2)[1] == account
        ]
        values: dict[str, tuple[str, int]] = {}
        for record in records:
            for name, (value, ts) in crm_fields(rt, source, record).items():
                if name not in values or ts > values[name][1]:
                    values[name] = (value, ts)
        if not values:
            report.without_values += 1
            continue
        contact = by_id.get(contact_id)
        if contact is None:
            report.missing.append(contact_id)
            continue
        report.compared += 1
        have = {f: contact.fields.get(f, "") for f in COMPARED_FIELDS}
        diff = differing({k: v for k, (v, _ts) in values.items()}, have, region)
        if not diff:
            continue
        applied = rt.state.applied(contact_id)
        evidence = Evidence(
            parked=rt.state.has_parked(source, object_id),
            dead_letter_fields=letters.get(contact_id, set()),
            staged_fields={
                s.field
                for s in rt.state.read_stage(contact_id)
                if not s.field.startswith(NOTES_PREFIX)
            },
            applied={
                k: (v[0] if isinstance(v, tuple) else None)
                for k, v in applied.items()
                if k != "_updated"
            },
        )
        for name, value in diff.items():
            report.drifts.append(
                Drift(
                    source,
                    account,
                    object_id,
                    contact_id,
                    name,
                    value,
                    values[name][1],
                    have.get(name) or "",
                    explain(name, value, evidence, region),
                )
            )
    return report


def store(rt: Runtime, report: ReconcileReport) -> None:
    """Keep the latest result for /metrics and `status`."""
    rt.redis.hset(
        DRIFT_KEY,
        mapping={
            "fields": len(report.drifts),
            "contacts": report.contacts(),
            "compared": report.compared,
            "at": f"{rt.clock():.3f}",
            "reasons": json.dumps(report.by_reason()),
            "calls": report.calls,
            "via": report.via,
        },
    )


def latest(client: redis.Redis) -> dict[str, Any]:
    """The last stored result ({} when reconcile never ran)."""
    raw = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in client.hgetall(DRIFT_KEY).items()
    }
    if not raw:
        return {}
    return {
        "fields": int(raw.get("fields", 0)),
        "contacts": int(raw.get("contacts", 0)),
        "compared": int(raw.get("compared", 0)),
        "at": float(raw.get("at", 0)),
        "reasons": json.loads(raw.get("reasons", "{}")),
        "calls": int(raw.get("calls", 0)),
        "via": raw.get("via", "export"),
    }


def last_skip(client: redis.Redis) -> dict[str, Any]:
    """The daily reconcile's last skip ({"reason", "at"}; {} when it never skipped)."""
    raw = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in client.hgetall(SKIPPED_KEY).items()
    }
    if not raw:
        return {}
    return {"reason": raw.get("reason", ""), "at": float(raw.get("at", 0))}


def repair(rt: Runtime, report: ReconcileReport) -> int:
    """Stage the CRM values of repairable drifts; returns how many fields were staged."""
    by_contact: dict[str, list[Drift]] = defaultdict(list)
    for d in report.drifts:
        if d.reason in REPAIRABLE:
            by_contact[d.contact].append(d)
    staged_total = 0
    for contact, drifts in by_contact.items():
        rt.state.forget_applied(contact, [d.field for d in drifts])
        rows = [
            (
                d.field,
                d.crm_value,
                d.crm_ts_ms,
                {"r": d.record, "t": "contact", "c": {}, "o": d.crm_ts_ms, "q": 0},
            )
            for d in drifts
        ]
        now = rt.clock()
        newly_due, staged, _stale = rt.state.stage(
            contact,
            rows,
            due_at=now + rt.settings.coalesce_seconds,
            fp=None,
            seen_ttl=rt.settings.dedupe_ttl_seconds,
            lease_seconds=rt.settings.coalesce_seconds + rt.lease_seconds,
        )
        staged_total += staged
        if newly_due:
            rt.dispatch_flush(contact, rt.settings.coalesce_seconds)
    if staged_total:
        rt.metrics.incr("drift_repaired", staged_total)
    return staged_total


def run(
    rt: Runtime,
    contacts: Iterable[LeadLexContact] | None = None,
    *,
    calls: int = 0,
    via: str = "export",
) -> ReconcileReport:
    """Reconcile against `contacts` (read with `calls` LeadLex calls), or against an export
    made now (ExportRefused / BudgetExhaustedError when it cannot be had); keep the result."""
    from worker.onboarding.directory import export_contacts

    if contacts is None:
        exported = export_contacts(rt)
        contacts, calls, via = exported, exported.calls, "export"
    report = reconcile(rt, contacts)
    report.calls, report.via = calls, via
    store(rt, report)
    return report


class ReconcileSkipped(RuntimeError):
    """The daily reconcile could not read LeadLex within its share; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _skip(rt: Runtime, reason: str) -> ReconcileSkipped:
    rt.redis.hset(SKIPPED_KEY, mapping={"reason": reason, "at": f"{rt.clock():.3f}"})
    rt.metrics.incr("reconcile_skipped")
    return ReconcileSkipped(reason)


def run_daily(rt: Runtime) -> ReconcileReport:
    """The daily task: the export, else the paged list when it fits LIST_SHARE of the day's
    calls; ReconcileSkipped (kept for `status`, counted) when neither can be had."""
    from worker.leadlex import LeadLexError
    from worker.onboarding.directory import (
        BudgetExhaustedError,
        ExportRefused,
        ListWalk,
        export_contacts,
    )

    try:
        exported = export_contacts(rt)
    except BudgetExhaustedError as err:
        raise _skip(rt, str(err)) from err
    except ExportRefused as refused:
        allowed = math.floor(LIST_SHARE * rt.settings.daily_limit)
        walk = ListWalk(rt)
        try:
            pages = walk.first()
            if pages > allowed:
                raise _skip(
                    rt,
                    f"{refused.reason}; the paged list would cost {pages} calls, more than "
                    f"{LIST_SHARE:g} of the {rt.settings.daily_limit} calls a day ({allowed})",
                )
            for _page in walk.rest():
                pass
        except (LeadLexError, BudgetExhaustedError) as err:
            raise _skip(rt, f"{refused.reason}; the paged list failed: {err}") from err
        return run(rt, walk.contacts, calls=refused.calls + pages, via="list")
    return run(rt, exported, calls=exported.calls)
