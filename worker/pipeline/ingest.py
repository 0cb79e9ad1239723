"""Ingest: take one ChangeEvent into the sync state (dedupe, order, map, resolve, stage).

Order: the event's time is first clamped (`clamp_future`: no later than receive time +
MAX_CLOCK_SKEW_SECONDS); lifecycle events go to worker.pipeline.lifecycle; field values
merge into the record's snapshot per field by CRM time, then `seq` (the order within one
time, CDC only; equal pairs: the tie rule, see worker.state; whole-record events stamp
only the fields whose value changed), and only the fields this event set are mapped and
staged.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Mapping
from typing import Any

from worker.events import ChangeEvent, clamp_future
from worker.mapping import map_record
from worker.metrics import Metrics
from worker.pipeline.lifecycle import LIFECYCLE_KINDS, apply_lifecycle
from worker.pipeline.linking import replay_parked
from worker.pipeline.resolve import resolve
from worker.pipeline.runtime import Runtime
from worker.state import NOTES_PREFIX, seq_of_time

log = logging.getLogger("leadlex_sync.worker")

# An acknowledged event not taken in this long after the broker's visibility timeout was lost.
INBOX_GRACE_SECONDS = 30.0


def ingest(rt: Runtime, event: ChangeEvent) -> str:
    """Take one event into the sync state; returns the outcome (for logs and tests)."""
    st = rt.state
    event, future_ms = clamp_future(
        event, int(rt.clock() * 1000), rt.settings.max_clock_skew_seconds * 1000
    )
    if event.kind in LIFECYCLE_KINDS:
        outcome = apply_lifecycle(rt, event)
        if future_ms and outcome != "duplicate":
            _report_clamp(rt, event, future_ms)
        return outcome
    record = event.record_key
    with_values = event.kind in ("update", "create") and bool(event.changes)
    seen, life, link, snapshot, seqs = st.prelude_seq(
        event.fingerprint,
        record,
        event.occurred_at_ms,
        event.changes if with_values else None,
        whole_record=event.whole_record,
        seq=event.seq,
    )
    if seen:
        rt.metrics.incr("events_deduped", source=event.source)
        return "duplicate"
    if future_ms:
        _report_clamp(rt, event, future_ms)
    ttl = rt.settings.dedupe_ttl_seconds

    if not with_values:
        st.mark_seen(event.fingerprint, ttl)
        rt.metrics.incr("events_ignored", source=event.source, kind=event.kind)
        return "ignored"
    if life is not None and life.blocks(event.occurred_at_ms):
        if life.state == "deleted":
            # Dated at or before the record's deletion: a restore replays it.
            if st.park(event.to_dict(), check_link=False) is not None:
                rt.dispatch_ingest([event.to_dict()])  # restored meanwhile: take it again
                return "requeued"
            rt.metrics.incr("events_parked", reason="deleted")
            return "gone"
        st.mark_seen(event.fingerprint, ttl)  # erased, or merged into another record
        rt.metrics.incr("events_ignored", source=event.source, kind=event.kind)
        log.info("event of an erased or merged record ignored", extra={"record": record})
        return life.state

    # The fields whose value this event set (or, on a tie, competes for): an unchanged
    # field of a whole-record event and a field a newer event set (by time, then seq) are
    # left out. On a tie the event's own value is mapped and the staging step applies the
    # tie rule to the LeadLex values, so ties resolve the same way whatever the arrival order.
    current = [
        name
        for name in event.changes
        if name in snapshot
        and snapshot[name][1] == event.occurred_at_ms
        and seqs.get(name, 0) == event.seq
    ]
    stale = len(event.changes) - len(current)
    view = dict(snapshot)
    for name in current:
        view[name] = (event.changes[name], event.occurred_at_ms)
    result = map_record(rt.mapping, event.source, event.object_type, view, current)

    contact = link
    if contact is None:
        contact, retry_at = resolve(rt, event, result.leadlex_id, result.email)
        if contact is None:
            contact = st.park(event.to_dict(), check_link=True, retry_at=retry_at)
        if contact is None:
            reason = "lookup_pending" if retry_at is not None else "unlinked"
            rt.metrics.incr("events_parked", reason=reason)
            log.info("event parked: no LeadLex link", extra={"record": record, "reason": reason})
            return "unlinked"

    for rej in result.rejected:
        # A composed field (full_name) names its parts as "firstname+lastname".
        parts = {f: view.get(f, (None, 0))[0] for f in rej.crm_field.split("+")}
        rt.dlq.add(
            rej.reason,
            source=event.source,
            payload=_replay_event(event, parts),
            details={
                "field": rej.leadlex_field,
                "crm_field": rej.crm_field,
                "problem": rej.message,
            },
            contact=contact,
        )
        rt.metrics.incr("dead_lettered", reason=rej.reason)

    origin = {
        "r": record,
        "t": event.object_type,
        "c": {k: event.changes[k] for k in current},
        "o": event.occurred_at_ms,
        "q": event.received_at_ms,
    }
    # A composed value (full_name) is marked "p" (from the record's parts): staging lets the
    # record's next composition of the same time replace it (worker.state, _STAGE).
    composed_origin = {**origin, "p": 1}
    rows: list[tuple[str, str, int, dict[str, Any]]] = [
        (name, fv.value, fv.ts_ms, composed_origin if name in result.composed else origin)
        for name, fv in result.fields.items()
    ]
    if result.notes is not None:
        rows.append((NOTES_PREFIX + record, result.notes.value, result.notes.ts_ms, origin))

    now = rt.clock()
    newly_due, staged, _stale = st.stage(
        contact,
        rows,
        due_at=now + rt.settings.coalesce_seconds,
        fp=event.fingerprint,
        seen_ttl=ttl,
        unpark=(event.source, event.object_id),
        lease_seconds=rt.settings.coalesce_seconds + rt.lease_seconds,
        counters=_counter_fields(event.source),
        extra_stale=stale,
        seqs=row_seqs(rows, snapshot, seqs, event.occurred_at_ms, event.seq, result.composed),
    )
    if newly_due:
        rt.dispatch_flush(contact, rt.settings.coalesce_seconds)
    return "staged" if staged else "stale"


def row_seqs(
    rows: list[tuple[str, str, int, dict[str, Any]]],
    snapshot: Mapping[str, tuple[str | None, int]],
    snapshot_seqs: Mapping[str, int],
    ts_ms: int,
    seq: int,
    composed: Collection[str] = (),
) -> dict[str, int]:
    """The within-time order of each staged row: the event's own `seq` for a value of its
    time; a value of another time (a name composed with a newer part) takes the greatest
    seq of the record's snapshot fields of that time (the flush re-maps it if needed), and
    so does a composed value of the event's time when a part of that time has a greater
    one (a name is as new as its newest part, as in the flush's re-mapping)."""
    out: dict[str, int] = {}
    for name, _value, ts, _origin in rows:
        if ts != ts_ms:
            row_seq = seq_of_time(snapshot, snapshot_seqs, ts)
        elif name in composed:
            row_seq = max(seq, seq_of_time(snapshot, snapshot_seqs, ts))
        else:
            row_seq = seq
        if row_seq:
            out[name] = row_seq
    return out


@functools.cache
def _counter_fields(source: str) -> tuple[str, str, str]:
    return (
        Metrics.field("fields_staged", source=source),
        Metrics.field("fields_stale", source=source),
        Metrics.field("events_coalesced"),
    )


def _replay_event(event: ChangeEvent, changes: dict[str, str | None]) -> dict[str, Any]:
    """A ChangeEvent dict carrying only `changes`, for the dead-letter store's replay."""
    data = event.to_dict()
    data["changes"] = changes
    return data


def _report_clamp(rt: Runtime, event: ChangeEvent, future_ms: int) -> None:
    """Count and log (once per event: parked and replayed copies carry the clamped time)."""
    rt.metrics.incr("event_times_clamped", source=event.source)
    log.warning(
        "event time from the future clamped to receive time + MAX_CLOCK_SKEW_SECONDS",
        extra={
            "record": event.record_key,
            "event_id": event.event_id,
            "occurred_at_ms": future_ms,
            "clamped_to_ms": event.occurred_at_ms,
        },
    )


def replay_unlinked(rt: Runtime, records: list[tuple[str, str]]) -> int:
    """Re-enqueue parked events of (source, object_id) records (see `replay_parked`)."""
    return replay_parked(rt, records)


def recover_lost(rt: Runtime, limit: int = 500) -> int:
    """Enqueue again acknowledged events the broker lost; returns how many (periodic).

    The receiver records every event it acknowledges in the inbox (worker.state). Once
    the broker's visibility timeout has passed, a killed worker's unacknowledged messages
    have been delivered again, so an event still neither seen, parked nor dead-lettered
    was lost on the way: kombu's Redis transport pops a message and only then records it
    as unacknowledged, so a worker (or Redis) dying in between loses it, and Celery drops
    an `acks_late` message whose retry cannot be published. Duplicates are harmless (the
    fingerprint ledger); each event is tried again once per grace period."""
    now = rt.clock()
    grace = rt.settings.visibility_timeout_seconds + INBOX_GRACE_SECONDS
    events = rt.state.sweep_inbox(now - grace, now, limit)
    for i in range(0, len(events), 100):
        rt.dispatch_ingest(events[i : i + 100])
    if events:
        rt.metrics.incr("events_recovered", len(events))
        log.warning("acknowledged events enqueued again", extra={"events": len(events)})
    return len(events)
