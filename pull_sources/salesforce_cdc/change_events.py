"""Decoded CDC events -> ChangeEvents, gaps and filtered changes (pure: no I/O).

One Pub/Sub event (its Avro body decoded with its schema) becomes:
- one ChangeEvent per id in `recordIds` (several ids: one change merged over records);
- `CREATE` -> kind "create" with every non-null body field; `UPDATE` -> "update" with only
  the fields the `changedFields` bitmap marks, and a field marked in `nulledFields` as a
  clearing (None: the worker's `clear_policy` decides, "skip" today); `DELETE` -> "delete";
  `UNDELETE` -> "restore" (both without values; DELETE bodies are empty);
- compound fields flattened to the object's field names: `Name.FirstName` -> `FirstName`,
  `MailingAddress.City` -> `MailingCity`, Lead `Address.City` -> `City`, other compounds
  `Parent.Child`; so CDC and outbound messages feed the same mapping;
- `GAP_*` events (header only) and `GAP_OVERFLOW` (no record ids) -> a `Gap` (dead letter
  `salesforce_gap`); so do `diffFields` (a long text sent as a diff, which we cannot apply
  without the old text: the other fields still sync) and wildcard ids such as `003*`.
Field time = `commitTimestamp` (ms); within one millisecond, changes are ordered by
`within_time_seq` (commitNumber, then sequenceNumber), carried as ChangeEvent.seq, so the
worker orders two changes of one time by commit whatever their arrival order. Events are
also handed off in commit (replay) order; `commit_order` orders the events of one
transaction by `sequenceNumber`.

Identity: account = the org id, fingerprint = sha256("salesforce", org, "cdc", event uuid,
record id), so a redelivered event (after a resubscribe) is absorbed by the worker's ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pull_sources.salesforce_cdc.bitmap import BitmapError, RecordShape, decode
from worker.batch import InvalidEvent
from worker.events import ChangeEvent, Changes, Kind, Source, fingerprint

SOURCE: Source = "salesforce"
HEADER = "ChangeEventHeader"
OBJECT_TYPES: Mapping[str, str] = {"Contact": "contact", "Lead": "lead"}
KINDS: Mapping[str, Kind] = {
    "CREATE": "create",
    "UPDATE": "update",
    "DELETE": "delete",
    "UNDELETE": "restore",
}
GAP_TYPES = frozenset({"GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW"})
GAP_REASON = "salesforce_gap"


@dataclass(frozen=True, slots=True)
class Header:
    """The ChangeEventHeader fields we use."""

    entity: str
    record_ids: tuple[str, ...]
    change_type: str
    change_origin: str
    transaction_key: str
    sequence_number: int
    commit_timestamp: int
    commit_user: str
    commit_number: int
    changed: tuple[str, ...]
    nulled: tuple[str, ...]
    diff: tuple[str, ...]

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Header:
        raw = body.get(HEADER)
        if not isinstance(raw, Mapping):
            raise InvalidEvent(HEADER, "missing")

        def text(name: str, required: bool = False) -> str:
            value = raw.get(name)
            if value is None or value == "":
                if required:
                    raise InvalidEvent(f"{HEADER}.{name}", "missing")
                return ""
            return str(value)

        def number(name: str) -> int:
            value = raw.get(name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidEvent(f"{HEADER}.{name}", "missing or not a number")
            return value

        def optional_number(name: str) -> int:
            value = raw.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        def strings(name: str) -> tuple[str, ...]:
            value = raw.get(name) or ()
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise InvalidEvent(f"{HEADER}.{name}", "not a list of strings")
            return tuple(str(v) for v in value)

        return cls(
            entity=text("entityName", required=True),
            record_ids=strings("recordIds"),
            change_type=text("changeType", required=True),
            change_origin=text("changeOrigin"),
            transaction_key=text("transactionKey"),
            sequence_number=number("sequenceNumber"),
            commit_timestamp=number("commitTimestamp"),
            commit_user=text("commitUser"),
            commit_number=optional_number("commitNumber"),
            changed=strings("changedFields"),
            nulled=strings("nulledFields"),
            diff=strings("diffFields"),
        )


@dataclass(frozen=True, slots=True)
class OriginFilter:
    """Changes to leave out: made by these users (commitUser, 15/18-char ids compared on the
    first 15) or through these API clients (a substring of changeOrigin, e.g. `client=etl`)."""

    users: frozenset[str] = frozenset()
    origins: tuple[str, ...] = ()

    @classmethod
    def of(cls, users: Iterable[str], origins: Iterable[str]) -> OriginFilter:
        return cls(frozenset(u[:15] for u in users if u), tuple(o for o in origins if o))

    def skips(self, header: Header) -> bool:
        if header.commit_user and header.commit_user[:15] in self.users:
            return True
        return any(o in header.change_origin for o in self.origins)


@dataclass(frozen=True, slots=True)
class Gap:
    """Changes we know happened but cannot apply: the records must be re-read (resynced)."""

    cause: str  # "gap", "overflow", "diff_fields", "wildcard_ids"
    entity: str
    change_type: str
    record_ids: tuple[str, ...]
    commit_timestamp: int
    fields: tuple[str, ...] = ()

    def details(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "entity": self.entity,
            "change_type": self.change_type,
            "record_ids": list(self.record_ids),
            "commit_timestamp": self.commit_timestamp,
            "fields": list(self.fields),
        }


@dataclass(slots=True)
class Translation:
    """What one CDC event becomes."""

    header: Header
    events: list[ChangeEvent] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    filtered: bool = False  # left out by the OriginFilter
    ignored: str | None = None  # an entity we do not sync (its name)


def field_name(parent: str, child: str) -> str:
    """The object field a compound component stands for (`MailingAddress.City` -> `MailingCity`)."""
    if parent == "Name":
        return child
    if parent.endswith("Address"):
        return parent.removesuffix("Address") + child
    return f"{parent}.{child}"


def as_text(value: Any) -> str | None:
    """CRM values travel as text, like outbound messages (booleans `true`/`false`)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _component(body: Mapping[str, Any], parent: str, child: str) -> Any:
    record = body.get(parent)
    return record.get(child) if isinstance(record, Mapping) else None


def _expand(names: Sequence[str], shape: RecordShape) -> list[tuple[str, str | None]]:
    """(parent, child) pairs for decoded names; a bare compound name with no component
    listed stands for all its components."""
    with_children = {n.partition(".")[0] for n in names if "." in n}
    out: list[tuple[str, str | None]] = []
    for name in names:
        parent, dot, child = name.partition(".")
        if dot:
            out.append((parent, child))
            continue
        if name == HEADER:
            continue
        position = shape.names.index(name) if name in shape.names else -1
        nested = shape.compounds.get(position)
        if nested is None:
            out.append((name, None))
        elif name not in with_children:
            out += [(name, c) for c in nested.names]
    return out


def _update_changes(
    header: Header, body: Mapping[str, Any], shape: RecordShape
) -> tuple[Changes, list[str]]:
    try:
        changed = decode(header.changed, shape)
        nulled = decode(header.nulled, shape)
        diff = set(decode(header.diff, shape))
    except BitmapError as exc:
        raise InvalidEvent(f"{HEADER}.changedFields", str(exc)) from None
    cleared = set(_expand(nulled, shape))
    changes: Changes = {}
    skipped: list[str] = []
    for parent, child in _expand([*changed, *(n for n in nulled if n not in changed)], shape):
        dotted = f"{parent}.{child}" if child else parent
        if dotted in diff or parent in diff:
            skipped.append(dotted)
            continue
        if child is None:
            key, value = parent, body.get(parent)
        else:
            key, value = field_name(parent, child), _component(body, parent, child)
        changes[key] = None if (parent, child) in cleared else as_text(value)
    return changes, skipped


def _all_values(body: Mapping[str, Any], shape: RecordShape) -> Changes:
    changes: Changes = {}
    for position, name in enumerate(shape.names):
        if name == HEADER:
            continue
        value = body.get(name)
        if position in shape.compounds:
            if isinstance(value, Mapping):
                for child, part in value.items():
                    if part is not None:
                        changes[field_name(name, child)] = as_text(part)
        elif value is not None:
            changes[name] = as_text(value)
    return changes


def translate(
    body: Mapping[str, Any],
    shape: RecordShape,
    *,
    org: str,
    event_uuid: str,
    received_ms: int,
    origin_filter: OriginFilter = OriginFilter(),
) -> Translation:
    """One decoded event -> its ChangeEvents and gaps; InvalidEvent when it is malformed."""
    header = h = Header.of(body)
    result = Translation(header)
    if header.change_type in GAP_TYPES:
        cause = "overflow" if header.change_type == "GAP_OVERFLOW" else "gap"
        result.gaps.append(Gap(cause, h.entity, h.change_type, h.record_ids, h.commit_timestamp))
        return result
    kind = KINDS.get(header.change_type)
    if kind is None:
        raise InvalidEvent(f"{HEADER}.changeType", f"unknown value {h.change_type[:40]!r}")
    object_type = OBJECT_TYPES.get(header.entity)
    if object_type is None:
        result.ignored = header.entity[:64]
        return result
    if origin_filter.skips(header):
        result.filtered = True
        return result
    if not event_uuid:
        raise InvalidEvent("event.id", "missing event uuid")

    skipped: list[str] = []
    changes: Changes = {}
    if kind == "update":
        changes, skipped = _update_changes(header, body, shape)
    elif kind == "create":
        changes = _all_values(body, shape)
    ids = [i for i in header.record_ids if i and "*" not in i]
    wildcards = tuple(i for i in header.record_ids if "*" in i)
    if not header.record_ids:
        raise InvalidEvent(f"{HEADER}.recordIds", "empty")
    if wildcards:
        result.gaps.append(
            Gap("wildcard_ids", h.entity, h.change_type, wildcards, h.commit_timestamp)
        )
    if skipped and ids:
        result.gaps.append(
            Gap(
                "diff_fields",
                header.entity,
                header.change_type,
                tuple(ids),
                header.commit_timestamp,
                tuple(skipped),
            )
        )
    for record_id in ids:
        result.events.append(
            ChangeEvent(
                source=SOURCE,
                account=org,
                object_type=object_type,
                object_id=record_id,
                kind=kind,
                occurred_at_ms=header.commit_timestamp,
                seq=within_time_seq(header),
                fingerprint=fingerprint(SOURCE, org, "cdc", event_uuid, record_id),
                event_id=event_uuid,
                changes=dict(changes),
                received_at_ms=received_ms,
            )
        )
    return result


# sequenceNumber is at most this (a transaction of more than 100,000 changes overflows).
_SEQUENCE_SPAN = 1_000_000
# A commitNumber this large cannot be carried with the sequence in ChangeEvent.seq's 20
# digits (worker.state.SEQ_MAX): such events are ordered by sequenceNumber alone.
_COMMIT_NUMBER_LIMIT = 10**14


def within_time_seq(header: Header) -> int:
    """The order of a change among changes with the same commitTimestamp (ChangeEvent.seq):
    commitNumber (the SCN, which grows with commit order: two transactions committed in one
    millisecond) then sequenceNumber (order within the transaction). A missing or
    oversized commitNumber counts as 0: then only sequenceNumber orders, and two
    transactions of one millisecond with the same sequenceNumber fall to the value tie
    rule (documented in docs/architecture.md)."""
    sequence = min(max(header.sequence_number, 0), _SEQUENCE_SPAN - 1)
    commit = header.commit_number if 0 < header.commit_number < _COMMIT_NUMBER_LIMIT else 0
    return commit * _SEQUENCE_SPAN + sequence


def commit_order(headers: Sequence[Header]) -> list[int]:
    """Indexes of `headers` in commit order: arrival (replay) order, with the events of one
    transaction grouped and ordered by `sequenceNumber`."""
    first_seen: dict[str, int] = {}
    for index, header in enumerate(headers):
        first_seen.setdefault(header.transaction_key or f"\x00{index}", index)

    def key(index: int) -> tuple[int, int, int]:
        header = headers[index]
        group = first_seen[header.transaction_key or f"\x00{index}"]
        return (group, header.sequence_number if header.transaction_key else 0, index)

    return sorted(range(len(headers)), key=key)
