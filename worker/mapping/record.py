"""map_record: one CRM record's changed fields -> the LeadLex fields to PATCH.

Pure and cheap: dictionary lookups precomputed in `ObjectMapping`, one pass over the
changed fields, normalizers only for the fields that need them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from worker.mapping.config import MappingConfig, ObjectMapping
from worker.mapping.normalize import (
    clean_notes,
    clean_text,
    normalize_email,
    normalize_leadlex_id,
    normalize_linkedin_url,
    normalize_phone,
)

# Rejection.reason codes.
INVALID_EMAIL = "invalid_email"
INVALID_PHONE = "invalid_phone"
INVALID_LINKEDIN_URL = "invalid_linkedin_url"
TOO_LONG = "too_long"
REASONS: tuple[str, ...] = (INVALID_EMAIL, INVALID_PHONE, INVALID_LINKEDIN_URL, TOO_LONG)
_REASONS = {"email": INVALID_EMAIL, "phone": INVALID_PHONE, "linkedin_url": INVALID_LINKEDIN_URL}

_NAME_PARTS = ("first_name", "last_name")
_COMPOSED = frozenset({"full_name"})

Snapshot = Mapping[str, tuple[str | None, int]]


@dataclass(frozen=True, slots=True)
class FieldValue:
    """A LeadLex field value and the CRM time (epoch ms) it reflects."""

    value: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """A changed CRM value that cannot be sent to LeadLex, and why (`reason` is a code)."""

    leadlex_field: str
    crm_field: str
    value: str | None  # the whole cleaned value (never cut: a cut value could be replayed)
    reason: str  # one of REASONS
    message: str


@dataclass(frozen=True, slots=True)
class MappingResult:
    """What one event means for LeadLex: fields to overwrite, notes text, and what was left out."""

    fields: dict[str, FieldValue]  # LeadLex field -> value; only fields `changed` affects
    notes: FieldValue | None  # full current (cleaned) text of the notes CRM field, if changed
    rejected: list[Rejection]
    skipped: list[str]  # changed CRM fields not mapped, cleared, or notes disabled
    leadlex_id: str | None  # LeadLex contact id carried by the CRM record, if valid
    email: str | None  # normalized email from the snapshot, if valid (resolve-by-email)
    # LeadLex fields in `fields` composed from several CRM fields of the snapshot (full_name
    # from the name parts): a value composed before a part of the same time arrived is
    # replaced by the record's next composition of that time, whatever the values.
    composed: frozenset[str] = frozenset()


@dataclass(slots=True)
class _Candidate:
    key: str  # CRM field (case-folded for HubSpot)
    text: str  # cleaned, non-empty
    ts_ms: int


class _Run:
    """State of one map_record call: the snapshot view, caches and outputs."""

    __slots__ = ("cfg", "changed", "fields", "names", "om", "rejected", "snap", "texts")

    def __init__(self, cfg: MappingConfig, om: ObjectMapping, snap: Snapshot) -> None:
        self.cfg = cfg
        self.om = om
        self.snap = snap
        self.changed: set[str] = set()
        self.names: dict[str, str] = {}  # folded key -> name as the event spelled it
        self.texts: dict[str, _Candidate | None] = {}
        self.fields: dict[str, FieldValue] = {}
        self.rejected: list[Rejection] = []

    def text(self, key: str) -> _Candidate | None:
        """The cleaned, non-empty value of CRM field `key` in the snapshot, else None."""
        if key in self.texts:
            return self.texts[key]
        entry = self.snap.get(key)
        cand = None
        if entry is not None:
            value, ts = entry
            if value is not None and value != "":
                text = clean_text(value if isinstance(value, str) else str(value))
                if text:
                    cand = _Candidate(key, text, ts)
        self.texts[key] = cand
        return cand

    def newest(self, target: str, only_changed: bool = False) -> _Candidate | None:
        """Newest non-empty value among the CRM fields feeding `target`; ties: later wins."""
        best: _Candidate | None = None
        for key in self.om.sources.get(target, ()):
            if only_changed and key not in self.changed:
                continue
            cand = self.text(key)
            if cand is not None and (best is None or cand.ts_ms >= best.ts_ms):
                best = cand
        return best

    def emit(self, target: str, crm_field: str, text: str, ts_ms: int) -> bool:
        """Normalize `text` for `target`; store it in fields or record a rejection."""
        limit = self.cfg.max_length
        reason = TOO_LONG
        message = f"longer than {limit} characters"
        value: str | None = None
        if len(text) <= limit:
            reason = _REASONS.get(target, TOO_LONG)
            try:
                if target == "email":
                    value = normalize_email(text)
                elif target == "phone":
                    value = normalize_phone(text, self.cfg.default_region)
                elif target == "linkedin_url":
                    value = normalize_linkedin_url(text)
                else:
                    value = text
            except ValueError as exc:
                message = str(exc)
            else:
                if len(value) > limit:  # e.g. a LinkedIn path grown by percent-encoding
                    reason, value = TOO_LONG, None
        if value is None:
            self.rejected.append(Rejection(target, crm_field, text, reason, message))
            return False
        self.fields[target] = FieldValue(value, ts_ms)
        return True

    def single(self, target: str) -> None:
        """A plain field: send the newest value if it came with this event."""
        best = self.newest(target)
        # best not in `changed`: another CRM field feeding the same LeadLex field holds a
        # newer value, which LeadLex already has; the older change is superseded.
        if best is not None and best.key in self.changed:
            self.emit(target, self.names[best.key], best.text, best.ts_ms)

    def full_name(self, parts_changed: bool) -> bool:
        """full_name: a changed direct field wins, else compose the snapshot's name parts.

        Returns True when full_name was composed from the parts (so a cleared part counts
        as handled, not skipped).
        """
        direct = self.newest("full_name", only_changed=True)
        if direct is not None:
            self.emit("full_name", self.names[direct.key], direct.text, direct.ts_ms)
            return False
        if not parts_changed:
            return False
        parts = [p for p in (self.newest(t) for t in _NAME_PARTS) if p is not None]
        if not parts:
            return False
        text = " ".join(p.text for p in parts)
        crm = "+".join(self.names.get(p.key, p.key) for p in parts)
        # The name is as of the newest part change, a clear included: "Mara" after
        # LastName was cleared at t=200 is the t=200 state, not FirstName's t=100.
        ts = max(
            entry[1]
            for t in _NAME_PARTS
            for key in self.om.sources.get(t, ())
            if (entry := self.snap.get(key)) is not None
        )
        self.emit("full_name", crm, text, ts)
        return True


def _fold(snapshot: Snapshot, relevant: frozenset[str]) -> dict[str, tuple[str | None, int]]:
    """Lower-case the relevant keys; on a case clash the newer value wins."""
    out: dict[str, tuple[str | None, int]] = {}
    for name, entry in snapshot.items():
        key = name.lower()
        if key in relevant:
            old = out.get(key)
            if old is None or entry[1] >= old[1]:
                out[key] = entry
    return out


def map_record(
    cfg: MappingConfig,
    source: str,
    object_type: str,
    snapshot: Snapshot,
    changed: Iterable[str],
) -> MappingResult:
    """Map the CRM fields in `changed` to LeadLex fields, reading values from `snapshot`.

    `snapshot` holds the record's newest known value per CRM field (value, ts_ms) after
    merging this event; `changed` names the CRM fields this event carried. Never raises
    on odd values: they end up in `rejected` (invalid) or `skipped` (cleared, unmapped).
    An unknown (source, object_type) skips every changed field.
    """
    names = list(dict.fromkeys(changed))
    om = cfg.objects.get((source, object_type))
    if om is None:
        return MappingResult({}, None, [], names, None, None)
    fold = om.case_insensitive
    run = _Run(cfg, om, _fold(snapshot, om.relevant) if fold else snapshot)

    keys = [name.lower() if fold else name for name in names]
    for name, key in zip(names, keys, strict=True):
        run.changed.add(key)
        run.names.setdefault(key, name)

    notes: FieldValue | None = None
    targets: dict[str, None] = {}  # affected LeadLex fields, in order
    parts_changed = False
    for key in keys:
        target = om.targets.get(key)
        if target is None:
            continue
        if target in _NAME_PARTS:
            parts_changed = True
            target = "full_name"
        targets.setdefault(target, None)

    composed = False
    for target in targets:
        if target == "full_name":
            composed = run.full_name(parts_changed)
        else:
            run.single(target)

    skipped: list[str] = []
    for name, key in zip(names, keys, strict=True):
        target = om.targets.get(key)
        if target is not None:
            if run.text(key) is None and not (composed and target in _NAME_PARTS):
                skipped.append(name)  # cleared: clear_policy "skip" never sends a clear
        elif key == om.notes_field:
            notes = _notes(run, name, key, notes)
            if notes is None and not any(r.crm_field == name for r in run.rejected):
                skipped.append(name)
        elif key != om.leadlex_id_field:
            skipped.append(name)  # not mapped (or notes disabled)

    return MappingResult(
        fields=run.fields,
        notes=notes,
        rejected=run.rejected,
        skipped=skipped,
        leadlex_id=_leadlex_id(run),
        email=_email(run),
        composed=_COMPOSED if composed and "full_name" in run.fields else frozenset(),
    )


def _notes(run: _Run, name: str, key: str, current: FieldValue | None) -> FieldValue | None:
    if current is not None:  # same field listed twice under different case
        return current
    entry = run.snap.get(key)
    if entry is None or not entry[0]:
        return None
    value, ts = entry
    text = clean_notes(value if isinstance(value, str) else str(value))
    if not text:
        return None
    limit = run.cfg.max_notes_length
    if len(text) > limit:
        run.rejected.append(
            Rejection("notes", name, text, TOO_LONG, f"longer than {limit} characters")
        )
        return None
    return FieldValue(text, ts)


def _leadlex_id(run: _Run) -> str | None:
    key = run.om.leadlex_id_field
    entry = run.snap.get(key) if key else None
    if entry is None or not entry[0]:
        return None
    try:
        return normalize_leadlex_id(str(entry[0]))
    except ValueError:
        return None


def _email(run: _Run) -> str | None:
    sent = run.fields.get("email")
    if sent is not None:
        return sent.value
    best = run.newest("email")
    if best is None or len(best.text) > run.cfg.max_length:
        return None
    try:
        return normalize_email(best.text)
    except ValueError:
        return None


def unsendable(
    cfg: MappingConfig,
    source: str,
    object_type: str,
    snapshot: Snapshot,
    names: Iterable[str],
) -> set[str]:
    """The CRM fields of `names` whose value in `snapshot` LeadLex cannot be given: refused
    by the mapping (an invalid phone, email, LinkedIn URL) or cleared (clear_policy "skip"),
    for fields mapped to one LeadLex field of their own (not the name parts, which compose
    full_name, nor notes). The pipeline stages an older value of such a field that arrives
    after it, as it would have kept that value had it arrived first."""
    om = cfg.objects.get((source, object_type))
    if om is None:
        return set()
    fold = om.case_insensitive
    candidates = []
    for name in dict.fromkeys(names):
        target = om.targets.get(name.lower() if fold else name)
        if target is not None and target not in _NAME_PARTS:
            candidates.append(name)
    if not candidates:
        return set()
    result = map_record(cfg, source, object_type, snapshot, candidates)
    out = set(result.skipped)
    out.update(rej.crm_field for rej in result.rejected)
    return {name for name in candidates if name in out}

