"""The ChangeEvent contract shared by webhook_app (producer) and the worker (consumer).

A ChangeEvent is one CRM record's change, normalized across sources. It travels
through Celery as a plain JSON dict (`to_dict` / `from_dict`), so the field names
here are a wire format: add fields with defaults, never rename.

Fingerprints (the dedupe key the worker's ledger uses):
- HubSpot:    sha256("hubspot", portalId, object type, kind, objectId, occurredAt,
              propertyName, propertyValue, merged ids[, association ends]): what changed,
              not how it was delivered, so webhooks and the Webhooks Journal agree
              (worker.crm_events.hubspot.change_fingerprint; eventId is not unique).
- Salesforce: sha256("salesforce", OrganizationId, Notification/Id).
- Generic:    sha256("generic", webhook-id, index of the change in the message).

Times: `occurred_at_ms` is the CRM's clock. A time later than the receive time plus
MAX_CLOCK_SKEW_SECONDS is clamped to that bound when the worker takes the event in
(`clamp_future`, called once by ingest for every source, replays and parked events
included), so an event dated 9999 cannot win every later comparison.

`whole_record`: the source sends every selected field with the record's time (Salesforce
outbound messages stamp all of them with LastModifiedDate), not just what changed. Ingest
then gives a field the event's time only when its value differs from the record's last
known value; an unchanged field keeps its earlier time.

`seq`: the order of changes that carry the same `occurred_at_ms` (greater = later), for a
source that knows it (Salesforce CDC: commitNumber and sequenceNumber, see
pull_sources.salesforce_cdc.change_events.within_time_seq); 0 for every other source and
for messages from before the field existed. Field values are ordered by (occurred_at_ms,
seq) and only an equal pair falls to the value tie rule (worker.state).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Source = Literal["hubspot", "salesforce", "generic"]
Kind = Literal[
    "update",  # field values changed (HubSpot propertyChange, Salesforce notification)
    "create",  # record created (may carry fields)
    "delete",  # record deleted in the CRM
    "privacy_delete",  # GDPR deletion in the CRM
    "merge",  # records `merged_ids` were merged into `object_id`
    "restore",  # a deleted record came back
    "association",  # association change (no field values; counted, not synced)
]
KINDS: tuple[str, ...] = (
    "update",
    "create",
    "delete",
    "privacy_delete",
    "merge",
    "restore",
    "association",
)

# CRM values are strings (HubSpot and Salesforce send text); None means "cleared".
Changes = dict[str, str | None]


def fingerprint(*parts: object) -> str:
    """A stable dedupe key from the identifying parts of a CRM event (hex sha256, 32 chars)."""
    raw = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One normalized CRM change: which record, what happened, when, and the new values."""

    source: Source
    account: str  # HubSpot portalId, Salesforce OrganizationId (18-char), generic account
    object_type: str  # "contact" or "lead"
    object_id: str  # the CRM record id
    kind: Kind
    occurred_at_ms: int  # CRM time of the change, epoch milliseconds
    fingerprint: str  # dedupe key, see module docstring
    event_id: str = ""  # the source's own id, for logs and support
    changes: Changes = field(default_factory=dict)
    merged_ids: tuple[str, ...] = ()  # kind == "merge": records merged into object_id
    received_at_ms: int = 0  # when our receiver accepted it (for end-to-end latency)
    whole_record: bool = False  # every field sent with the record's time (see docstring)
    seq: int = 0  # order among changes of one record at the same occurred_at_ms (docstring)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable form for the Celery message."""
        # Field by field rather than dataclasses.asdict (a deep copy, 4x slower; issue 14):
        # every field is a plain value but `changes` (a flat dict of str/None, copied) and
        # `merged_ids` (a tuple, sent as a list).
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["changes"] = dict(self.changes)
        data["merged_ids"] = list(self.merged_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChangeEvent:
        """Rebuild from `to_dict` output; unknown keys (from newer senders) are ignored."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["merged_ids"] = tuple(known.get("merged_ids") or ())
        known["changes"] = dict(known.get("changes") or {})
        return cls(**known)

    @property
    def record_key(self) -> str:
        """`source:account:object_id`, the CRM record's identity in Redis keys."""
        return f"{self.source}:{self.account}:{self.object_id}"


def clamp_future(event: ChangeEvent, now_ms: int, max_skew_ms: int) -> tuple[ChangeEvent, int]:
    """The event with a CRM time no later than its receive time plus `max_skew_ms`.

    The receive time is `received_at_ms`, or `now_ms` for events that carry none (old
    messages, dead-letter replays): the bound of a given event never moves, so a parked
    or replayed event gets the same time every time. Returns (event, the original time
    when it was clamped, else 0)."""
    bound = (event.received_at_ms or now_ms) + max_skew_ms
    if event.occurred_at_ms <= bound:
        return event, 0
    return replace(event, occurred_at_ms=bound), event.occurred_at_ms
