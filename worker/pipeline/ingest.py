"""Ingest: take one ChangeEvent into the sync state (dedupe, order, map, resolve, stage)."""

from __future__ import annotations

import functools
import logging
from typing import Any

from worker.events import ChangeEvent
from worker.mapping import map_record
from worker.metrics import Metrics
from worker.pipeline.resolve import resolve
from worker.pipeline.runtime import Runtime
from worker.state import NOTES_PREFIX

log = logging.getLogger("leadlex_sync.worker")

# An acknowledged event not taken in this long after the broker's visibility timeout was lost.
INBOX_GRACE_SECONDS = 30.0


def ingest(rt: Runtime, event: ChangeEvent) -> str:
    """Take one event into the sync state; returns the outcome (for logs and tests)."""
    st = rt.state
    record = event.record_key
    with_values = event.kind in ("update", "create") and bool(event.changes)
    seen, gone, link, snapshot = st.prelude(
        event.fingerprint, record, event.occurred_at_ms, event.changes if with_values else None
    )
    if seen:
        rt.metrics.incr("events_deduped", source=event.source)
        return "duplicate"
    ttl = rt.settings.dedupe_ttl_seconds

    if event.kind in ("delete", "privacy_delete"):
        if rt.settings.deletion_policy == "unlink":
            st.mark_gone(record, event.occurred_at_ms)
            st.remove_links_for_record(event.source, event.account, event.object_id)
        st.mark_seen(event.fingerprint, ttl)
        log.info("record deleted in CRM", extra={"record": record, "kind": event.kind})
        return "deleted"
    if event.kind == "merge":
        _merge_links(rt, event)
        st.mark_seen(event.fingerprint, ttl)
        return "merged"
    if event.kind == "restore":
        st.unmark_gone(record)
        st.mark_seen(event.fingerprint, ttl)
        return "restored"
    if not with_values:
        st.mark_seen(event.fingerprint, ttl)
        rt.metrics.incr("events_ignored", source=event.source, kind=event.kind)
        return "ignored"
    if gone is not None and gone >= event.occurred_at_ms:
        st.mark_seen(event.fingerprint, ttl)
        return "gone"

    current = [
        name
        for name in event.changes
        if name in snapshot and snapshot[name][1] == event.occurred_at_ms
    ]
    stale = len(event.changes) - len(current)
    result = map_record(rt.mapping, event.source, event.object_type, snapshot, current)

    contact = link or resolve(rt, event, result.leadlex_id, result.email)
    if contact is None:
        st.park_unlinked(event.source, event.object_id, event.fingerprint, event.to_dict())
        rt.metrics.incr("events_parked", reason="unlinked")
        log.info("event parked: no LeadLex link", extra={"record": record})
        return "unlinked"

    for rej in result.rejected:
        # A composed field (full_name) names its parts as "firstname+lastname".
        parts = {f: snapshot.get(f, (None, 0))[0] for f in rej.crm_field.split("+")}
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
    rows: list[tuple[str, str, int, dict[str, Any]]] = [
        (name, fv.value, fv.ts_ms, origin) for name, fv in result.fields.items()
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
    )
    if newly_due:
        rt.dispatch_flush(contact, rt.settings.coalesce_seconds)
    return "staged" if staged else "stale"


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


def _merge_links(rt: Runtime, event: ChangeEvent) -> None:
    """HubSpot merge: the surviving record inherits a merged record's link if it has none."""
    st = rt.state
    target = st.resolve_link(event.source, event.account, event.object_id)
    for merged in event.merged_ids:
        contact = st.resolve_link(event.source, event.account, merged)
        if contact and target is None:
            st.set_links([(event.source, event.account, event.object_id, contact)])
            target = contact
            replay_unlinked(rt, [(event.source, event.object_id)])
        st.remove_links_for_record(event.source, event.account, merged)


def replay_unlinked(rt: Runtime, records: list[tuple[str, str]]) -> int:
    """Re-enqueue parked events of (source, object_id) records that now have a link."""
    events: list[dict[str, Any]] = []
    for source, object_id in records:
        events.extend(rt.state.take_unlinked(source, object_id))
    for i in range(0, len(events), 100):
        rt.dispatch_ingest(events[i : i + 100])
    return len(events)


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
