"""Record lifecycle: deletion, restore, merge and privacy deletion, ordered by CRM time.

Each CRM record keeps its newest lifecycle event (`lls:life`, see worker.state): an event
older than that one does nothing, so a deletion replayed after a later restore, or an old
restore arriving after a newer deletion, changes nothing. On equal times a deletion wins
over a restore (the conservative choice; it does not depend on arrival order).

- delete (DELETION_POLICY=unlink): the record stops syncing; its link is kept. Its events
  dated at or before the deletion are parked, not dropped: a restore replays them.
  DELETION_POLICY=ignore: deletions do nothing.
- restore: syncing resumes (the link is still there) and the parked events are replayed.
- privacy_delete (HubSpot GDPR deletion), whatever DELETION_POLICY says: final. The record's
  links, snapshot, parked events, staged values not sent yet and remembered notes text (the
  personal data we hold) are dropped, and no later
  event of the record (a restore, an edit, a replay) is ever synced again. LeadLex is left
  untouched: erasing the person there is the operator's decision.
- merge: each merged record not past the merge's time stops syncing (`merged`) and loses its
  link; the survivor inherits the first such link when it has none, and its parked events
  are replayed. A replayed merge is a duplicate or finds nothing left to move.
"""

from __future__ import annotations

import logging

from worker.events import ChangeEvent
from worker.pipeline.linking import replay_parked
from worker.pipeline.runtime import Runtime

log = logging.getLogger("leadlex_sync.worker")

LIFECYCLE_KINDS = frozenset({"delete", "privacy_delete", "restore", "merge"})

_APPLIED = {"delete": "deleted", "restore": "restored", "privacy_delete": "erased"}


def apply_lifecycle(rt: Runtime, event: ChangeEvent) -> str:
    """Apply a lifecycle event in CRM-time order; returns the outcome (logs and tests)."""
    st = rt.state
    ttl = rt.settings.dedupe_ttl_seconds
    if event.kind == "merge":
        return _merge(rt, event)
    if event.kind == "delete" and rt.settings.deletion_policy == "ignore":
        if not st.seen(event.fingerprint):
            st.mark_seen(event.fingerprint, ttl)
            rt.metrics.incr("lifecycle_events", kind=event.kind, outcome="ignored")
        return "deleted"
    outcome, before = st.lifecycle(
        event.fingerprint, event.record_key, event.kind, event.occurred_at_ms, ttl
    )
    if outcome == "duplicate":
        rt.metrics.incr("events_deduped", source=event.source)
        return "duplicate"
    rt.metrics.incr("lifecycle_events", kind=event.kind, outcome=outcome)
    extra = {
        "record": event.record_key,
        "kind": event.kind,
        "occurred_at_ms": event.occurred_at_ms,
        "outcome": outcome,
        "before": f"{before.state}@{before.ts_ms}" if before else "",
    }
    if outcome != "applied":
        log.info("lifecycle event older than the record's newest one: ignored", extra=extra)
        return "stale_lifecycle" if outcome == "stale" else "erased"
    log.info("record lifecycle changed in CRM", extra=extra)
    if event.kind == "restore":
        replay_parked(rt, [(event.source, event.object_id)])
    return _APPLIED[event.kind]


def _merge(rt: Runtime, event: ChangeEvent) -> str:
    seen, inherited, target, merged = rt.state.merge(
        event.fingerprint,
        (event.source, event.account, event.object_id),
        [m for m in event.merged_ids if m != event.object_id],
        event.occurred_at_ms,
        rt.settings.dedupe_ttl_seconds,
    )
    if seen:
        rt.metrics.incr("events_deduped", source=event.source)
        return "duplicate"
    outcome = "applied" if merged else "stale"
    rt.metrics.incr("lifecycle_events", kind="merge", outcome=outcome)
    log.info(
        "records merged in CRM",
        extra={
            "record": event.record_key,
            "merged": merged,
            "stale": sorted(set(event.merged_ids) - set(merged)),
            "inherited_link": inherited,
            "linked": bool(target),
        },
    )
    # The survivor's waiting events can go now; the merged records' parked events are
    # older than the merge and are dropped when ingested again.
    records = [(event.source, m) for m in merged]
    if inherited:
        records.append((event.source, event.object_id))
    replay_parked(rt, records)
    return "merged"
