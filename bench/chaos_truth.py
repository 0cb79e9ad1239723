"""The chaos run's ground truth: what the world wrote, kept by the generator, and the check
of LeadLex's final state against it. Independent of the product on purpose.

Nothing here imports the product (`worker`, `webhook_app`, `cli`): the expected LeadLex
values come from a second, deliberately simple implementation of the default field
mapping (`crm_writes`), applied to the writes the generator itself made, and the actual
values from the simulator (LeadLex) and the dead-letter store as an operator sees it
(`leadlex-sync dlq list --json`). If the product's mapping and this one disagree, the run
says so instead of agreeing with itself.

The truth:
- **CRM writes.** Every edit a CRM user makes, with its CRM time: a HubSpot property
  change, or the fields a Salesforce edit actually changed (a Salesforce outbound message
  carries the whole record; only the changed fields are *writes*; the record's first
  message, sent before the stream, writes every field it carries). Each becomes writes of
  LeadLex fields through `crm_writes`: one per mapped field, `valid` False when the
  default mapping must refuse the value (the generator knows which phone numbers it made
  invalid).
- **Third-party writes.** A LeadLex user editing contacts directly, through the
  simulator's normal API with another key: field overwrites and notes appends. Each
  carries a unique `Idempotency-Key` ("tp-..."), by which the simulator's request log
  says whether and when it was applied (also when its answer was lost or came late).
- **Notes.** Every notes line is unique (CRM: "h17-n004-3fa2", third party:
  "tp-c17-n3-9b1e").

The checks (`reconcile`):
- `field_not_newest`: each LeadLex field holds the newest valid write among the CRM and
  third-party writes (by their real times: CRM time, the simulator's apply time), or that
  value sits in the dead-letter store for the contact.
- `rejected_value_not_dead_lettered`: a newest write the mapping refuses is dead-lettered.
- `note_missing` / `note_appended_twice` / `note_unknown`: each CRM notes line that was
  acknowledged and each applied third-party line appears exactly once in the contact's
  notes, or (CRM lines) sits in the dead-letter store with reason `notes_uncertain`; no
  line twice, none that nobody wrote.
- `rate_limit_exceeded` / `unexpected_429`: computed by the caller from the simulator's
  log without the third-party requests.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

# The default mapping (README "Field mapping", worker/mapping's docstring), written again.
HUBSPOT_FIELDS = {
    "email": "email",
    "phone": "phone",
    "jobtitle": "job_title",
    "company": "company_name",
}
SALESFORCE_FIELDS = {"Email": "email", "Phone": "phone", "Title": "job_title"}
NAME_PARTS = {"hubspot": ("firstname", "lastname"), "salesforce": ("FirstName", "LastName")}
NOTES_FIELD = {"hubspot": "leadlex_notes", "salesforce": "Description"}
NOTES_PREFIX = {"hubspot": "[HubSpot] ", "salesforce": "[Salesforce] "}
THIRD_PARTY_PREFIX = "tp-"
_PHONE = re.compile(r"^\+44 20 7946 (\d{4})$")  # the only valid shape the generator makes


@dataclass(frozen=True)
class Write:
    """One write of a LeadLex field, by a CRM (through the product) or a third party."""

    contact: int  # index of the contact in the run
    field: str  # LeadLex field
    value: str | None  # what LeadLex should hold after it (None: nothing to hold)
    ts: float  # epoch seconds: CRM time, or the simulator's apply time
    origin: str  # "hubspot:<tag>", "salesforce:<tag>" or "third_party"
    valid: bool = True  # False: the mapping must refuse it (dead letter)
    raw: str | None = None  # the CRM value as written (for finding its dead letter)


def normalize_phone(raw: str) -> str | None:
    """E.164 of the generator's phone numbers; None for the ones it made invalid."""
    m = _PHONE.match(raw)
    return f"+44207946{m.group(1)}" if m else None


def crm_writes(
    source: str,
    contact: int,
    tag: str,
    values: dict[str, str | None],
    changed: list[str],
    ts_ms: int,
) -> list[Write]:
    """The LeadLex field writes one CRM edit makes: `values` is the record after the edit,
    `changed` the CRM fields the user changed (notes excluded: see `Truth.note_lines`)."""
    mapping = HUBSPOT_FIELDS if source == "hubspot" else SALESFORCE_FIELDS
    origin = f"{source}:{tag}"
    ts = ts_ms / 1000
    out: list[Write] = []
    for crm_field in changed:
        target = mapping.get(crm_field)
        raw = values.get(crm_field)
        if target is None or raw is None:
            continue
        if target == "phone":
            phone = normalize_phone(raw)
            out.append(Write(contact, target, phone, ts, origin, phone is not None, raw))
        else:
            out.append(Write(contact, target, raw, ts, origin, True, raw))
    first, last = NAME_PARTS[source]
    if first in changed or last in changed:
        name = " ".join(p for p in (values.get(first), values.get(last)) if p)
        if name:
            out.append(Write(contact, "full_name", name, ts, origin, True, name))
    return out


def notes_lines(text: str | None) -> list[str]:
    """The lines of a notes text without the CRM prefixes (every line is a unique token)."""
    out = []
    for line in (text or "").split("\n"):
        line = line.strip()
        for prefix in NOTES_PREFIX.values():
            if line.startswith(prefix):
                line = line[len(prefix) :]
        if line:
            out.append(line)
    return out


@dataclass
class ThirdPartyWrite:
    """A PATCH a LeadLex user sent with another key; its outcome is read from the log."""

    key: str  # Idempotency-Key, "tp-..."
    contact: int
    body: dict[str, str]
    sent_at: float


@dataclass
class Truth:
    """Every write the world made, by event (CRM) or by key (third party)."""

    # CRM: event key -> the LeadLex writes it carries (counted only if acknowledged)
    crm: dict[int, list[Write]] = field(default_factory=dict)
    # CRM notes: event key -> (contact, record tag, lines the event's text holds)
    crm_notes: dict[int, tuple[int, str, list[str]]] = field(default_factory=dict)
    third_party: list[ThirdPartyWrite] = field(default_factory=list)

    def record_crm(
        self,
        event: int,
        source: str,
        contact: int,
        tag: str,
        values: dict[str, str | None],
        changed: list[str],
        ts_ms: int,
    ) -> None:
        """Keep what a CRM edit (one event) wrote."""
        self.crm[event] = crm_writes(source, contact, tag, values, changed, ts_ms)
        if NOTES_FIELD[source] in changed:
            self.crm_notes[event] = (contact, tag, notes_lines(values.get(NOTES_FIELD[source])))

    def record_third_party(self, write: ThirdPartyWrite) -> None:
        self.third_party.append(write)


def third_party_outcomes(
    truth: Truth, log_entries: list[dict[str, Any]]
) -> tuple[list[Write], list[str], list[dict[str, Any]]]:
    """Applied third-party writes (with the simulator's apply time), their notes lines,
    and the log entries that were third-party requests (to leave out of rate checks)."""
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    ours: list[dict[str, Any]] = []
    for entry in log_entries:
        key = str(entry.get("idempotency_key") or "")
        if key.startswith(THIRD_PARTY_PREFIX):
            by_key[key].append(entry)
            ours.append(entry)
    writes: list[Write] = []
    lines: list[str] = []
    for tp in truth.third_party:
        applied = [e for e in by_key.get(tp.key, []) if e.get("applied")]
        if not applied:
            continue
        entry = applied[0]
        ts = float(entry.get("applied_at") or entry["ts"])
        for name, value in tp.body.items():
            if name == "notes":
                lines.extend(notes_lines(value))
            else:
                writes.append(Write(tp.contact, name, value, ts, "third_party", True, value))
    return writes, lines, ours


def _newest(writes: list[Write]) -> dict[tuple[int, str], Write]:
    out: dict[tuple[int, str], Write] = {}
    for w in sorted(writes, key=lambda w: w.ts):
        out[(w.contact, w.field)] = w
    return out


def _newest_valid(writes: list[Write]) -> dict[tuple[int, str], Write]:
    return _newest([w for w in writes if w.valid])


def _in_letters(letters: list[dict[str, Any]], text: str, reason: str | None = None) -> bool:
    for letter in letters:
        if reason is not None and letter.get("reason") != reason:
            continue
        if text in json.dumps(letter, default=str):
            return True
    return False


def reconcile(
    truth: Truth,
    acked: set[int],
    maybe: set[int],
    contact_ids: list[str],
    contacts: dict[str, dict[str, Any]],
    log_entries: list[dict[str, Any]],
    letters: list[dict[str, Any]],
    fields: tuple[str, ...],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Check LeadLex's final state against the truth.

    `acked`: events the receiver acknowledged (their writes must show); `maybe`: events
    sent but never acknowledged (either outcome is fine). `letters`: the dead-letter store
    as `leadlex-sync dlq list --json` prints it. Returns (report, violations)."""
    violations: list[dict[str, Any]] = []
    tp_writes, tp_lines, _tp_entries = third_party_outcomes(truth, log_entries)
    sure = [w for k in acked for w in truth.crm.get(k, [])] + tp_writes
    possible = sure + [w for k in maybe for w in truth.crm.get(k, [])]
    expected = _newest(sure)
    expected_valid = _newest_valid(sure)
    alternatives = _newest_valid(possible)
    by_contact: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for letter in letters:
        by_contact[str(letter.get("contact") or "")].append(letter)

    checked = 0
    for (c, name), newest in sorted(expected.items()):
        if name not in fields:
            continue
        cid = contact_ids[c]
        have = contacts.get(cid, {})
        if not newest.valid and not _in_letters(by_contact[cid], str(newest.raw)):
            violations.append(
                {
                    "check": "rejected_value_not_dead_lettered",
                    "contact": cid,
                    "field": name,
                    "value": newest.raw,
                    "origin": newest.origin,
                }
            )
        want = expected_valid.get((c, name))
        if want is None:
            continue
        checked += 1
        alt = alternatives.get((c, name))
        if have.get(name) == want.value or (alt is not None and have.get(name) == alt.value):
            continue
        if _in_letters(by_contact[cid], str(want.raw)):
            continue
        violations.append(
            {
                "check": "field_not_newest",
                "contact": cid,
                "field": name,
                "expected": want.value,
                "expected_origin": want.origin,
                "expected_ts": round(want.ts, 3),
                "actual": have.get(name),
                "actual_written_by": sorted(
                    {
                        f"{w.origin}@{w.ts:.3f}"
                        for w in possible
                        if w.contact == c and w.field == name and w.value == have.get(name)
                    }
                )[:3],
            }
        )

    # notes: per contact, the lines that must be there once (or be notes_uncertain)
    must: dict[int, set[str]] = defaultdict(set)
    allowed: dict[int, set[str]] = defaultdict(set)
    newest_text: dict[tuple[int, str], tuple[int, list[str]]] = {}
    for key, (c, tag, lines) in truth.crm_notes.items():
        if key in acked or key in maybe:
            allowed[c].update(lines)
        if key in acked:
            # a record's notes only grow: its newest acknowledged text holds every line
            seen = newest_text.get((c, tag))
            if seen is None or len(lines) > len(seen[1]):
                newest_text[(c, tag)] = (key, lines)
    for (c, _tag), (_key, lines) in newest_text.items():
        must[c].update(lines)
    tp_by_contact: dict[int, set[str]] = defaultdict(set)
    for tp in truth.third_party:
        for line in notes_lines(tp.body.get("notes")):
            if line in tp_lines:
                tp_by_contact[tp.contact].add(line)
                must[tp.contact].add(line)
            allowed[tp.contact].add(line)  # a write whose outcome we never learnt
    checked_lines = 0
    uncertain = 0
    for c in sorted(set(must) | set(allowed)):
        cid = contact_ids[c]
        counts = Counter(notes_lines(str(contacts.get(cid, {}).get("notes") or "")))
        for line in sorted(must[c]):
            checked_lines += 1
            if counts.get(line, 0) >= 1:
                continue
            if line not in tp_by_contact[c] and _in_letters(
                by_contact[cid], line, "notes_uncertain"
            ):
                uncertain += 1
                continue
            violations.append({"check": "note_missing", "contact": cid, "line": line})
        for line, n in counts.items():
            if n > 1:
                violations.append(
                    {"check": "note_appended_twice", "contact": cid, "line": line, "times": n}
                )
            elif line not in allowed[c]:
                violations.append({"check": "note_unknown", "contact": cid, "line": line})

    report = {
        "fields_checked": checked,
        "notes_lines_checked": checked_lines,
        "notes_uncertain_dead_lettered": uncertain,
        "third_party": {
            "writes_sent": len(truth.third_party),
            "field_writes_applied": len(tp_writes),
            "notes_lines_applied": len(tp_lines),
        },
        "crm_writes_acked": sum(len(truth.crm.get(k, [])) for k in acked),
    }
    return report, violations
